module keel/bench

go 1.19
