package ffid_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	ffid "github.com/ffid/ffid/clients/go"
)

// The first call: cos(0.5) from libm, in a worker of the daemon at
// $FFID_ADDRESS (else the default socket).
func ExampleDial() {
	ctx := context.Background()
	s, err := ffid.Dial(ctx, "")
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	libm, err := s.Load(ctx, "libm.so.6")
	if err != nil {
		log.Fatal(err)
	}
	if err := libm.Cdef(ctx, "double cos(double);"); err != nil {
		log.Fatal(err)
	}
	v, err := libm.Func("cos").Call(ctx, 0.5)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(v)
}

// A crash in native code is an error; errors.As gives its report.
func ExampleError() {
	ctx := context.Background()
	s, err := ffid.Dial(ctx, "")
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	lib, err := s.Load(ctx, "/path/to/libvendor.so")
	if err != nil {
		log.Fatal(err)
	}
	crash, err := lib.Function(ctx, "void vendor_crash(void)")
	if err != nil {
		log.Fatal(err)
	}
	_, err = crash.Call(ctx)
	var e *ffid.Error
	if errors.Is(err, ffid.ErrWorkerCrashed) && errors.As(err, &e) {
		fmt.Println(e.Crash.GetSignalName(), e.Crash.GetFunction())
	}
}

// A context deadline is the call's deadline.
func ExampleFunction_Call_deadline() {
	ctx := context.Background()
	s, err := ffid.Dial(ctx, "")
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	libc, err := s.Load(ctx, "libc.so.6")
	if err != nil {
		log.Fatal(err)
	}
	sleep, err := libc.Function(ctx, "unsigned int sleep(unsigned int)")
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err = sleep.Call(ctx, 10)
	fmt.Println(errors.Is(err, context.DeadlineExceeded))
}

// A Go function as a qsort comparator; inside it, reads run on the native
// thread that called it.
func ExampleSession_Callback() {
	ctx := context.Background()
	s, err := ffid.Dial(ctx, "")
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	libc, err := s.Load(ctx, "libc.so.6")
	if err != nil {
		log.Fatal(err)
	}
	if err := libc.Cdef(ctx, "void qsort(void *, size_t, size_t, int (*)(const void *, const void *));"); err != nil {
		log.Fatal(err)
	}
	arr, err := s.New(ctx, "int[5]", []int32{5, -3, 9, 0, 2})
	if err != nil {
		log.Fatal(err)
	}
	compare, err := s.Callback(ctx, "int compare(const void *, const void *)",
		func(ctx context.Context, args []any) (any, error) {
			a, err := args[0].(ffid.Pointer).ReadValue(ctx, "int")
			if err != nil {
				return nil, err
			}
			b, err := args[1].(ffid.Pointer).ReadValue(ctx, "int")
			if err != nil {
				return nil, err
			}
			return a.(int64) - b.(int64), nil
		})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := libc.Func("qsort").Call(ctx, arr, 5, 4, compare); err != nil {
		log.Fatal(err)
	}
	fmt.Println(arr.Value(ctx, "int[5]"))
}
