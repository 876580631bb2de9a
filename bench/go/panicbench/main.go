// Command panicbench measures what Go's defer, panic and recover cost, for
// comparison with keel's bench/bench_panic.c. It prints one line per case,
// "<case-name> <ns/op>", in the same format and order as the C program:
//
//	scope_defer          a call to a function that defers one call
//	panic_recover        panic and recover in the same function
//	panic_recover_deep10 recover at the top, panic 10 calls below
//	nil_deref            a recovered nil pointer dereference (a real SIGSEGV)
//	div_zero             a recovered integer divide by zero
//
// Each case is calibrated (which is also its warm-up) to run about
// KEEL_BENCH_RUN_MS milliseconds (default 150), then timed 5 times with the
// monotonic clock; the best (minimum) run is printed. The recovering
// deferred call counts what it recovered, and a run whose count is not its
// iteration count stops the program, so no case can quietly measure nothing.
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

const (
	runs = 5
	deep = 10
)

var (
	recovered int64
	sink      int
	panicFlag = true // the deep panic fires when set
	nilPtr    *int   // stays nil
	zero      int    // stays 0
	dividend  = 42
)

// Deferred functions.

//go:noinline
func nop() {}

//go:noinline
func recoverer() {
	if recover() != nil {
		recovered++
	}
}

// Case bodies.

//go:noinline
func bodyDefer() {
	defer nop()
}

//go:noinline
func bodyPanic() {
	defer recoverer()
	panic("x")
}

//go:noinline
func deepCall(n int) {
	if n <= 1 {
		if panicFlag {
			panic("x")
		}
		return
	}
	deepCall(n - 1)
	sink = n
}

//go:noinline
func bodyDeep() {
	defer recoverer()
	deepCall(deep)
	sink = 0
}

//go:noinline
func faultNil() {
	sink = *nilPtr
}

//go:noinline
func bodyNil() {
	defer recoverer()
	faultNil()
	sink = 0
}

//go:noinline
func faultDiv() {
	sink = dividend / zero
}

//go:noinline
func bodyDiv() {
	defer recoverer()
	faultDiv()
	sink = 0
}

// Loops: one per case, each timed as a whole.

//go:noinline
func loopScopeDefer(n int64) {
	for i := int64(0); i < n; i++ {
		bodyDefer()
	}
}

//go:noinline
func loopPanicRecover(n int64) {
	for i := int64(0); i < n; i++ {
		bodyPanic()
	}
}

//go:noinline
func loopPanicDeep(n int64) {
	for i := int64(0); i < n; i++ {
		bodyDeep()
	}
}

//go:noinline
func loopNilDeref(n int64) {
	for i := int64(0); i < n; i++ {
		bodyNil()
	}
}

//go:noinline
func loopDivZero(n int64) {
	for i := int64(0); i < n; i++ {
		bodyDiv()
	}
}

type benchCase struct {
	name     string
	loop     func(int64)
	recovers bool // every iteration recovers one panic
}

var cases = []benchCase{
	{"scope_defer", loopScopeDefer, false},
	{"panic_recover", loopPanicRecover, true},
	{"panic_recover_deep10", loopPanicDeep, true},
	{"nil_deref", loopNilDeref, true},
	{"div_zero", loopDivZero, true},
}

// runOnce runs the loop n times; it returns the nanoseconds taken.
func runOnce(c *benchCase, n int64) float64 {
	before := recovered
	t0 := time.Now()
	c.loop(n)
	d := time.Since(t0)
	if c.recovers && recovered-before != n {
		fmt.Fprintf(os.Stderr, "panicbench: %s: %d panics recovered, %d expected\n",
			c.name, recovered-before, n)
		os.Exit(1)
	}
	return float64(d.Nanoseconds())
}

// calibrate doubles n until a run takes 1/4 of the run time (this is the
// warm-up), then scales it to the run time.
func calibrate(c *benchCase, runNs float64) int64 {
	n := int64(100)
	var t float64
	for {
		t = runOnce(c, n)
		if t >= runNs/4 || n >= 1<<40 {
			break
		}
		n *= 2
	}
	if t < 1 {
		t = 1
	}
	n = int64(float64(n) * runNs / t)
	if n < 100 {
		n = 100
	}
	return n
}

func bench(c *benchCase, runNs float64) float64 {
	n := calibrate(c, runNs)
	best := 0.0
	for r := 0; r < runs; r++ {
		perOp := runOnce(c, n) / float64(n)
		if r == 0 || perOp < best {
			best = perOp
		}
	}
	return best
}

func main() {
	runMs := 150.0
	if s := os.Getenv("KEEL_BENCH_RUN_MS"); s != "" {
		if v, err := strconv.ParseFloat(s, 64); err == nil && v > 0 {
			runMs = v
		}
	}
	for i := range cases {
		c := &cases[i]
		selected := len(os.Args) < 2
		for _, a := range os.Args[1:] {
			selected = selected || a == c.name
		}
		if !selected {
			continue
		}
		fmt.Printf("%s %.2f\n", c.name, bench(c, runMs*1e6))
	}
}
