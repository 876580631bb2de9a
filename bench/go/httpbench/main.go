// Command httpbench is the Go twin of keel's HTTP benchmark servers
// (bench/http_keel.c, bench/http_bare.c): net/http, standard library only,
// answering the same two routes behind a deferred-recover middleware.
//
//	GET /hello   200 "hello\n" (text/plain)
//	GET /sleep   time.Sleep(10 * time.Millisecond), then the same answer
//
// The middleware is the idiom of Go services:
//
//	defer func() {
//		if v := recover(); v != nil {
//			http.Error(w, "Internal Server Error", 500)
//		}
//	}()
//
// around a http.ServeMux. Usage: httpbench [port]; port 0 (the default)
// lets the kernel pick. It listens on 127.0.0.1, prints "ready <port>" once
// it accepts connections, and serves until SIGTERM or SIGINT; then it shuts
// the server down, prints "served <n>" on stderr and exits 0. GOMAXPROCS is
// Go's default, the number of CPUs. bench/run-http.sh drives it.
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

var served atomic.Uint64

func recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				log.Printf("panic in %s %s: %v", r.Method, r.URL.Path, v)
				http.Error(w, "Internal Server Error", http.StatusInternalServerError)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func hello(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	served.Add(1)
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte("hello\n"))
}

func sleep(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		time.Sleep(10 * time.Millisecond)
	}
	hello(w, r)
}

func main() {
	port := 0
	if len(os.Args) > 2 {
		fmt.Fprintln(os.Stderr, "usage: httpbench [port]")
		os.Exit(2)
	}
	if len(os.Args) == 2 {
		p, err := strconv.Atoi(os.Args[1])
		if err != nil || p < 0 || p > 65535 {
			fmt.Fprintln(os.Stderr, "usage: httpbench [port]")
			os.Exit(2)
		}
		port = p
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/hello", hello)
	mux.HandleFunc("/sleep", sleep)
	srv := &http.Server{Handler: recoverer(mux), IdleTimeout: 30 * time.Second}

	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpbench:", err)
		os.Exit(1)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	fmt.Printf("ready %d\n", ln.Addr().(*net.TCPAddr).Port)

	select {
	case <-stop:
	case err := <-done:
		fmt.Fprintln(os.Stderr, "httpbench:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "httpbench: shutdown:", err)
	}
	fmt.Fprintf(os.Stderr, "served %d\n", served.Load())
}
