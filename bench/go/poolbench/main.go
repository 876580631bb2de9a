// Command poolbench measures how many empty tasks a second Go runs, each
// behind a deferred recover, for comparison with keel's bench/bench_pool.c.
// It prints one line per case, "<case-name> <tasks/s>", in the same format
// as the C program:
//
//	go_spawn_1p  one goroutine per task (Go's idiom), spawned from 1 goroutine
//	go_spawn_2p  the same, spawned from 2 goroutines at once
//	go_pool_1p   2 worker goroutines over a channel of capacity 1024,
//	             tasks sent from 1 goroutine
//	go_pool_2p   the same pool, tasks sent from 2 goroutines
//
// Every task runs as func() { defer func() { recover() }(); task() }, the
// way a goroutine that must not take the process down is written. A spawned
// goroutine also does defer wg.Done(); the spawners wait with a
// sync.WaitGroup. A pool worker counts the tasks it ran, and the counts must
// add up to n; for spawn-per-task the WaitGroup is the count (Wait returns
// only after n Done calls), so no case can quietly measure nothing.
//
// One timed run starts before the tasks are submitted (the pool's workers
// are started before the clock) and ends when every task has finished.
// Each case is calibrated (also its warm-up) to run about KEEL_BENCH_RUN_MS
// milliseconds (default 150), then timed 5 times; the best run is printed.
// GOMAXPROCS is Go's default, the number of CPUs.
package main

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

const (
	runs      = 5
	workers   = 2
	queueSize = 1024
)

//go:noinline
func task() {}

// runTask runs one task behind a deferred recover.
func runTask(f func()) {
	defer func() { recover() }()
	f()
}

// spawn runs n tasks, one goroutine each, spawned by producers goroutines.
func spawn(n int64, producers int) {
	var tasks, spawners sync.WaitGroup
	per := n / int64(producers)
	spawners.Add(producers)
	for p := 0; p < producers; p++ {
		go func() {
			defer spawners.Done()
			for i := int64(0); i < per; i++ {
				tasks.Add(1)
				go func() {
					defer tasks.Done()
					defer func() { recover() }()
					task()
				}()
			}
		}()
	}
	spawners.Wait()
	tasks.Wait()
}

// counter is one worker's count, on a cache line of its own.
type counter struct {
	n int64
	_ [56]byte
}

type pool struct {
	ch     chan func()
	done   sync.WaitGroup
	counts [workers]counter
}

func newPool() *pool {
	p := &pool{ch: make(chan func(), queueSize)}
	p.done.Add(workers)
	for w := 0; w < workers; w++ {
		go p.worker(&p.counts[w])
	}
	return p
}

func (p *pool) worker(c *counter) {
	defer p.done.Done()
	for f := range p.ch {
		runTask(f)
		c.n++
	}
}

// wait closes the channel, waits for the workers and returns the count.
func (p *pool) wait() int64 {
	close(p.ch)
	p.done.Wait()
	var sum int64
	for w := range p.counts {
		sum += p.counts[w].n
	}
	return sum
}

type benchCase struct {
	name      string
	pool      bool
	producers int
}

var cases = []benchCase{
	{"go_pool_1p", true, 1},
	{"go_spawn_1p", false, 1},
	{"go_pool_2p", true, 2},
	{"go_spawn_2p", false, 2},
}

// runOnce runs n tasks (a multiple of c.producers); it returns the
// nanoseconds taken.
func runOnce(c *benchCase, n int64) float64 {
	if !c.pool {
		t0 := time.Now()
		spawn(n, c.producers)
		return float64(time.Since(t0).Nanoseconds())
	}
	p := newPool()
	var producers sync.WaitGroup
	per := n / int64(c.producers)
	t0 := time.Now()
	producers.Add(c.producers)
	for i := 0; i < c.producers; i++ {
		go func() {
			defer producers.Done()
			for j := int64(0); j < per; j++ {
				p.ch <- task
			}
		}()
	}
	producers.Wait()
	ran := p.wait()
	d := time.Since(t0)
	if ran != n {
		fmt.Fprintf(os.Stderr, "poolbench: %s: %d tasks ran, %d expected\n",
			c.name, ran, n)
		os.Exit(1)
	}
	return float64(d.Nanoseconds())
}

func roundN(c *benchCase, n int64) int64 {
	n -= n % int64(c.producers)
	if n < 1000 {
		n = 1000
	}
	return n
}

// calibrate doubles n until a run takes 1/4 of the run time (this is the
// warm-up), then scales it to the run time.
func calibrate(c *benchCase, runNs float64) int64 {
	n := int64(1000)
	var t float64
	for {
		t = runOnce(c, n)
		if t >= runNs/4 || n >= 1<<34 {
			break
		}
		n *= 2
	}
	if t < 1 {
		t = 1
	}
	return roundN(c, int64(float64(n)*runNs/t))
}

// bench returns the best of runs, in tasks per second.
func bench(c *benchCase, runNs float64) float64 {
	n := calibrate(c, runNs)
	best := 0.0
	for r := 0; r < runs; r++ {
		rate := float64(n) * 1e9 / runOnce(c, n)
		if rate > best {
			best = rate
		}
	}
	return best
}

func main() {
	runMs := 150.0
	if v, err := strconv.ParseFloat(os.Getenv("KEEL_BENCH_RUN_MS"), 64); err == nil && v > 0 {
		runMs = v
	}
	found := 0
	for i := range cases {
		c := &cases[i]
		selected := len(os.Args) < 2
		for _, a := range os.Args[1:] {
			if a == c.name {
				selected = true
			}
		}
		if !selected {
			continue
		}
		found++
		fmt.Printf("%s %.0f\n", c.name, bench(c, runMs*1e6))
	}
	if found == 0 {
		fmt.Fprintln(os.Stderr, "poolbench: no such case")
		os.Exit(1)
	}
}
