package ffid_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	ffid "github.com/ffid/ffid/clients/go"
)

// dial starts a session on the test daemon, closed at the test's end.
func dial(t *testing.T, options ...ffid.Option) *ffid.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := ffid.Dial(ctx, testDaemon.address, options...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func load(t *testing.T, s *ffid.Session, name, cdef string) *ffid.Library {
	t.Helper()
	lib, err := s.Load(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if cdef != "" {
		if err := lib.Cdef(context.Background(), cdef); err != nil {
			t.Fatal(err)
		}
	}
	return lib
}

func TestFirstCall(t *testing.T) {
	ctx := context.Background()
	t.Setenv("FFID_ADDRESS", testDaemon.address)
	s, err := ffid.Dial(ctx, "") // the README's first call: $FFID_ADDRESS
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	libm, err := s.Load(ctx, "libm.so.6")
	if err != nil {
		t.Fatal(err)
	}
	if err := libm.Cdef(ctx, "double cos(double);"); err != nil {
		t.Fatal(err)
	}
	v, err := libm.Func("cos").Call(ctx, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if v != math.Cos(0.5) {
		t.Errorf("cos(0.5) = %v, want %v", v, math.Cos(0.5))
	}
	if !strings.HasSuffix(libm.Path(), "/libm.so.6") {
		t.Errorf("Path() = %q", libm.Path())
	}
}

func TestDefaultAddress(t *testing.T) {
	t.Setenv("FFID_ADDRESS", "unix:/somewhere/ffid.sock")
	if got := ffid.DefaultAddress(); got != "unix:/somewhere/ffid.sock" {
		t.Errorf("DefaultAddress() = %q", got)
	}
	t.Setenv("FFID_ADDRESS", "")
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/7")
	if got := ffid.DefaultAddress(); got != "unix:/run/user/7/ffid/ffid.sock" {
		t.Errorf("DefaultAddress() = %q", got)
	}
}

func TestErrorsAreTypedPerReason(t *testing.T) {
	ctx := context.Background()
	s := dial(t)
	_, err := s.Load(ctx, "libffid_does_not_exist.so.42")
	if !errors.Is(err, ffid.ErrLibraryNotFound) {
		t.Fatalf("Load: %v, want ErrLibraryNotFound", err)
	}
	if errors.Is(err, ffid.ErrSymbolNotFound) {
		t.Error("a LIBRARY_NOT_FOUND error is also ErrSymbolNotFound")
	}
	var e *ffid.Error
	if !errors.As(err, &e) || e.Reason != ffid.ReasonLibraryNotFound ||
		!strings.Contains(e.Message, "libffid_does_not_exist.so.42") {
		t.Errorf("errors.As: %#v", e)
	}
	if !strings.HasPrefix(err.Error(), "ffid: LIBRARY_NOT_FOUND: ") {
		t.Errorf("Error() = %q", err.Error())
	}

	lib := load(t, s, fixture, "")
	_, err = lib.Func("fx_never_declared").Call(ctx)
	if ffid.ReasonOf(err) != ffid.ReasonSymbolNotFound || !strings.Contains(err.Error(), "Cdef") {
		t.Errorf("an undeclared Func: %v", err)
	}
	cos, err := lib.Function(ctx, "int8_t fx_int8_id(int8_t)")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cos.Call(ctx, 300); !errors.Is(err, ffid.ErrValueOutOfRange) {
		t.Errorf("300 as int8_t: %v", err)
	}
	if _, err := cos.Call(ctx, 1, 2); !errors.Is(err, ffid.ErrArgumentCount) {
		t.Errorf("two arguments: %v", err)
	}
	if _, err := cos.Call(ctx, struct{}{}); !errors.Is(err, ffid.ErrTypeMismatch) {
		t.Errorf("a Go struct: %v", err)
	}
}

func TestCrashIsAnErrorWithItsReport(t *testing.T) {
	ctx := context.Background()
	s := dial(t)
	lib := load(t, s, fixture, "")
	crash, err := lib.Function(ctx, "void fx_crash_null(void)")
	if err != nil {
		t.Fatal(err)
	}
	_, err = crash.Call(ctx)
	var e *ffid.Error
	if !errors.As(err, &e) || e.Reason != ffid.ReasonWorkerCrashed || e.Crash == nil {
		t.Fatalf("crash: %v", err)
	}
	if e.Crash.GetSignalName() != "SIGSEGV" || e.Crash.GetFunction() != "fx_crash_null" {
		t.Errorf("crash report: %v", e.Crash)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.GetState().String() != "SESSION_STATE_CRASHED" {
		t.Errorf("state after the crash: %v", info.GetState())
	}
}

func TestContextDeadlineIsTheCallsDeadline(t *testing.T) {
	s := dial(t)
	lib := load(t, s, fixture, "")
	sleep, err := lib.Function(context.Background(), "void fx_sleep_ms(int)")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = sleep.Call(ctx, 30000)
	if !errors.Is(err, ffid.ErrDeadlineExceeded) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v: want ErrDeadlineExceeded, also context.DeadlineExceeded", err)
	}
	// The daemon killed the worker: the session reports it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := s.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.GetState().String() == "SESSION_STATE_CRASHED" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the session is still %v after its call's deadline", info.GetState())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCanceledContext(t *testing.T) {
	s := dial(t)
	lib := load(t, s, "libm.so.6", "double cos(double);")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := lib.Func("cos").Call(ctx, 0.5); !errors.Is(err, context.Canceled) {
		t.Errorf("a canceled context: %v", err)
	}
}

func TestValues(t *testing.T) {
	ctx := context.Background()
	s := dial(t)
	lib := load(t, s, fixture, `
		struct fxt_point { int x; int y; };
		enum fxt_color { FXT_RED = 1, FXT_GREEN = 2, FXT_BLUE = 4 };
		struct fxt_point fxt_point_add(struct fxt_point a, struct fxt_point b);
		enum fxt_color fxt_color_next(enum fxt_color c);
		uint64_t fx_uint64_max(void);
		const char *fx_greeting(void);
		const char *fx_null_string(void);
		long double fxt_long_double_half(long double x);
		int fx_sum_variadic(int n, ...);
		double fx_sum_variadic_doubles(int n, ...);
	`)
	cases := []struct {
		name string
		args []any
		want any
	}{
		{"fxt_point_add", []any{ffid.Record{"x": 1, "y": 2}, map[string]any{"x": int8(10), "y": uint16(20)}},
			ffid.Record{"x": int64(11), "y": int64(22)}},
		{"fxt_color_next", []any{"FXT_GREEN"}, "FXT_BLUE"},
		{"fx_uint64_max", nil, uint64(math.MaxUint64)},
		{"fx_greeting", nil, "h\u00e9llo w\u00f6rld \u2713"},
		{"fx_null_string", nil, nil},
		{"fx_sum_variadic", []any{3, ffid.As("int", 1), ffid.As("int", 2), ffid.As("int", 3)}, int64(6)},
		{"fx_sum_variadic_doubles", []any{2, 0.25, float32(0.5)}, 0.75},
	}
	for _, c := range cases {
		got, err := lib.Func(c.name).Call(ctx, c.args...)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if why := match(toExpectation(c.want), got); why != "" {
			t.Errorf("%s: %s", c.name, why)
		}
	}
}

func TestUnionsAndLongDoublesKeepEverything(t *testing.T) {
	ctx := context.Background()
	s := dial(t)
	lib := load(t, s, fixture, `
		union fxt_number { int i; float f; double d; };
		union fxt_tagged { int i; float f; const char *s; unsigned char bytes[8]; };
		union fxt_number fxt_number_from_float(float f);
		double fxt_number_as_double(union fxt_number n, int which);
		union fxt_tagged fxt_tagged_from_int(int i);
		long double fxt_long_double_half(long double x);
		long double fxt_long_double_third(long double x);
	`)
	got, err := lib.Func("fxt_number_from_float").Call(ctx, 1.5)
	if err != nil {
		t.Fatal(err)
	}
	number, ok := got.(ffid.Union)
	if !ok {
		t.Fatalf("a union result is a %T, not an ffid.Union", got)
	}
	if number.Members["f"] != 1.5 || number.Members["i"] != int64(0x3fc00000) {
		t.Errorf("union members: %v", number.Members)
	}
	if len(number.Bytes) != 8 || math.Float32frombits(binary.LittleEndian.Uint32(number.Bytes)) != 1.5 {
		t.Errorf("union bytes: %x", number.Bytes)
	}
	// Passed back as it came: its bytes.
	if back, err := lib.Func("fxt_number_as_double").Call(ctx, number, 1); err != nil || back != 1.5 {
		t.Errorf("union passed back: %v, %v", back, err)
	}
	if back, err := lib.Func("fxt_number_as_double").Call(ctx, &number, 1); err != nil || back != 1.5 {
		t.Errorf("*Union passed back: %v, %v", back, err)
	}
	// A member set by name still works.
	if back, err := lib.Func("fxt_number_as_double").Call(ctx, ffid.Record{"d": 0.25}, 2); err != nil || back != 0.25 {
		t.Errorf("union by member: %v, %v", back, err)
	}
	got, err = lib.Func("fxt_tagged_from_int").Call(ctx, 65)
	if err != nil {
		t.Fatal(err)
	}
	tagged := got.(ffid.Union)
	if p, ok := tagged.Members["s"].(ffid.Pointer); !ok || p.Address() != 65 {
		t.Errorf("a char * union member is its address, not followed: %#v", tagged.Members["s"])
	}

	got, err = lib.Func("fxt_long_double_half").Call(ctx, 3.0)
	if err != nil {
		t.Fatal(err)
	}
	half, ok := got.(ffid.LongDouble)
	if !ok {
		t.Fatalf("a long double result is a %T, not an ffid.LongDouble", got)
	}
	if half.Float64() != 1.5 || half.Decimal != "1.5" || len(half.Bytes) != 16 {
		t.Errorf("half: %+v", half)
	}
	got, err = lib.Func("fxt_long_double_third").Call(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	third := got.(ffid.LongDouble)
	// Every bit of the 64-bit mantissa: more digits than a float64 has.
	if third.String() != "0.33333333333333333334" || third.Approximate != 1.0/3 {
		t.Errorf("third: %+v", third)
	}
	// Passed back, nothing is lost: (1/3)/3 at long double precision.
	got, err = lib.Func("fxt_long_double_third").Call(ctx, third)
	if err != nil {
		t.Fatal(err)
	}
	if ninth := got.(ffid.LongDouble); !strings.HasPrefix(ninth.Decimal, "0.1111111111111111111") {
		t.Errorf("ninth: %+v", ninth)
	}
}

// toExpectation writes a Go value as the conformance file would.
func toExpectation(v any) any {
	switch x := v.(type) {
	case ffid.Record:
		o := object{}
		for k, member := range x {
			o[k] = toExpectation(member)
		}
		return o
	case int64, uint64, float64:
		return jsonNumber(x)
	}
	return v
}

func TestOutParametersAndErrno(t *testing.T) {
	ctx := context.Background()
	s := dial(t)
	libm := load(t, s, "libm.so.6", "")
	frexp, err := libm.Function(ctx, "double frexp(double x, int *exp)", ffid.Out("exp"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := frexp.Invoke(ctx, 8.0)
	if err != nil {
		t.Fatal(err)
	}
	if r.Value != 0.5 || r.Out["exp"] != int64(4) {
		t.Errorf("frexp(8) = %v, %v", r.Value, r.Out)
	}
	lib := load(t, s, fixture, "")
	setErrno, err := lib.Function(ctx, "int fx_set_errno(int)", ffid.WithErrno())
	if err != nil {
		t.Fatal(err)
	}
	r, err = setErrno.Invoke(ctx, 34)
	if err != nil || r.Errno != 34 {
		t.Errorf("errno: %v, %v", r, err)
	}
}

func TestMemory(t *testing.T) {
	ctx := context.Background()
	s := dial(t)
	lib := load(t, s, fixture, "struct fxt_point { int x; int y; };")
	m, err := s.Alloc(ctx, 16)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Write(ctx, []byte("hello\x00")); err != nil {
		t.Fatal(err)
	}
	strlen, err := lib.Function(ctx, "size_t fx_strlen(const char *)")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := strlen.Call(ctx, m); err != nil || n != uint64(5) {
		t.Errorf("strlen(memory) = %v, %v", n, err)
	}
	if n, err := strlen.Call(ctx, m.Add(1)); err != nil || n != uint64(4) {
		t.Errorf("strlen(memory + 1) = %v, %v", n, err)
	}
	all, err := m.Bytes(ctx)
	if err != nil || len(all) != 16 || string(all[:5]) != "hello" {
		t.Errorf("Bytes() = %q, %v", all, err)
	}
	if _, err := m.Add(8).Read(ctx, 16); !errors.Is(err, ffid.ErrOutOfBounds) {
		t.Errorf("reading past the end: %v", err)
	}
	pt, err := s.New(ctx, "struct fxt_point", ffid.Record{"x": 1, "y": 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := pt.Add(4).WriteValue(ctx, "int", 7); err != nil {
		t.Fatal(err)
	}
	v, err := pt.Value(ctx, "struct fxt_point")
	if err != nil || v.(ffid.Record)["y"] != int64(7) || pt.Size() != 8 {
		t.Errorf("the point: %v, %v (size %d)", v, err, pt.Size())
	}
	if err := m.Free(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Free(ctx); !errors.Is(err, ffid.ErrHandleInvalid) {
		t.Errorf("a second Free: %v", err)
	}
}

// More than 1 MiB goes on one stream each way (to a daemon without them,
// in 1 MiB pieces), each byte landing in place; a write past the end writes
// nothing (on the stream the whole range is checked first; in pieces the
// last, sent first, fails, and the error names it); a whole block of more
// than gRPC's default 4 MiB reads back.
func TestLargeMemoryOnStreamsAndInPieces(t *testing.T) {
	ctx := context.Background()
	s := dial(t)
	data := make([]byte, (5<<20)+77)
	for i := range data {
		data[i] = byte((uint32(i) * 2654435761) >> 24) // differs 1 MiB apart
	}
	m, err := s.Alloc(ctx, uint64(len(data)+3))
	if err != nil {
		t.Fatal(err)
	}
	for _, piecesOnly := range []bool{false, true} {
		if piecesOnly {
			ffid.UsePiecesOnly(s)
			for i := range data {
				data[i] ^= 0x5a
			}
		}
		if err := m.Add(3).Write(ctx, data); err != nil {
			t.Fatal(err)
		}
		back, err := m.Add(3).Read(ctx, len(data))
		if err != nil || !bytes.Equal(back, data) {
			t.Fatalf("Read: %d bytes, equal %v, %v", len(back), bytes.Equal(back, data), err)
		}
		all, err := m.Bytes(ctx)
		if err != nil || len(all) != len(data)+3 || !bytes.Equal(all[3:], data) {
			t.Fatalf("Bytes: %d bytes, %v", len(all), err)
		}
		err = m.Add(4).Write(ctx, data)
		var e *ffid.Error
		if !errors.Is(err, ffid.ErrOutOfBounds) || !errors.As(err, &e) ||
			piecesOnly != strings.HasPrefix(e.Message, "piece 6 of 6 (bytes 5242880..5242956 of 5242957): ") {
			t.Errorf("writing past the end (pieces %v): %v", piecesOnly, err)
		}
		_, err = m.Read(ctx, len(data)+4)
		if !errors.Is(err, ffid.ErrOutOfBounds) || !errors.As(err, &e) ||
			piecesOnly != strings.HasPrefix(e.Message, "piece 6 of 6 (bytes 5242880..5242960 of 5242961): ") {
			t.Errorf("reading past the end (pieces %v): %v", piecesOnly, err)
		}
		if back, err := m.Add(3).Read(ctx, len(data)); err != nil || !bytes.Equal(back, data) {
			t.Errorf("after the failed write: %v", err)
		}
	}
}

func TestCallbacks(t *testing.T) {
	ctx := context.Background()
	s := dial(t)
	lib := load(t, s, callbacksFixture, `
		int fxc_sort(void *base, size_t count, size_t size, int (*compare)(const void *, const void *));
		long fxc_threads_call(int (*f)(int, int), int threads, int per_thread);
		int fxc_call_once(int (*f)(int), int x);
	`)
	values := []int32{5, -3, 9, 0, 2}
	arr, err := s.New(ctx, "int[5]", values)
	if err != nil {
		t.Fatal(err)
	}
	compare, err := s.Callback(ctx, "int compare(const void *a, const void *b)",
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
		t.Fatal(err)
	}
	if _, err := lib.Func("fxc_sort").Call(ctx, arr, 5, 4, compare); err != nil {
		t.Fatal(err)
	}
	sorted, err := arr.Value(ctx, "int[5]")
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(values, func(i, j int) bool { return values[i] < values[j] })
	for i, v := range sorted.([]any) {
		if v != int64(values[i]) {
			t.Fatalf("sorted: %v", sorted)
		}
	}

	// From native threads, concurrently.
	var mu sync.Mutex
	threads := map[int64]bool{}
	add, err := s.Callback(ctx, "int f(int, int)", func(ctx context.Context, args []any) (any, error) {
		mu.Lock()
		threads[ffid.InvocationFrom(ctx).NativeThreadID] = true
		mu.Unlock()
		return args[0].(int64) + args[1].(int64), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sum, err := lib.Func("fxc_threads_call").Call(ctx, add, 4, 8)
	if err != nil || sum != int64(160) || len(threads) < 4 {
		t.Errorf("threads: %v, %v, %d threads", sum, err, len(threads))
	}

	// A callback's error, or panic, fails the native call with
	// CALLBACK_FAILED and its message.
	boom := errors.New("boom")
	failing, err := s.Callback(ctx, "int f(int)", func(context.Context, []any) (any, error) {
		return nil, boom
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = lib.Func("fxc_call_once").Call(ctx, failing, 1)
	if !errors.Is(err, ffid.ErrCallbackFailed) || !strings.Contains(err.Error(), "boom") {
		t.Errorf("a failing callback: %v", err)
	}
	panicking, err := s.Callback(ctx, "int f(int)", func(context.Context, []any) (any, error) {
		panic("oops")
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = lib.Func("fxc_call_once").Call(ctx, panicking, 1)
	if !errors.Is(err, ffid.ErrCallbackFailed) || !strings.Contains(err.Error(), "oops") {
		t.Errorf("a panicking callback: %v", err)
	}

	// Loading inside a callback would wait for the call running it.
	var inner error
	loader, err := s.Callback(ctx, "int f(int)", func(ctx context.Context, args []any) (any, error) {
		_, inner = s.Load(ctx, "libm.so.6")
		return 0, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lib.Func("fxc_call_once").Call(ctx, loader, 1); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(inner, ffid.ErrUnsupported) {
		t.Errorf("Load inside a callback: %v", inner)
	}
	if err := loader.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := lib.Func("fxc_call_once").Call(ctx, loader, 1); !errors.Is(err, ffid.ErrHandleInvalid) &&
		!errors.Is(err, ffid.ErrCallbackFailed) {
		t.Errorf("a released callback: %v", err)
	}
}

func TestConcurrentCalls(t *testing.T) {
	ctx := context.Background()
	s := dial(t)
	lib := load(t, s, fixture, "int fx_add(int, int);")
	add := lib.Func("fx_add")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				v, err := add.Call(ctx, g, i)
				if err == nil && v != int64(g+i) {
					err = errors.New("wrong sum")
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestClosedSession(t *testing.T) {
	ctx := context.Background()
	s := dial(t)
	lib := load(t, s, "libm.so.6", "double cos(double);")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := lib.Func("cos").Call(ctx, 0.5); !errors.Is(err, ffid.ErrSessionNotFound) {
		t.Errorf("after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
}

func TestSessionOptions(t *testing.T) {
	ctx := context.Background()
	s := dial(t, ffid.WithRestartPolicy(ffid.Restart), ffid.WithLimits(ffid.Limits{OpenFiles: 64}),
		ffid.WithIdleTimeout(time.Minute))
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.GetLimits().GetOpenFiles() != 64 || info.GetRestartPolicy().String() != "RESTART_POLICY_RESTART" {
		t.Errorf("session: %v", info)
	}
	_, err = ffid.Dial(ctx, testDaemon.address, ffid.WithLimits(ffid.Limits{OpenFiles: 1 << 40}))
	if !errors.Is(err, ffid.ErrResourceLimit) {
		t.Errorf("limits above the maximum: %v", err)
	}
}

func TestUnreachableDaemon(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := ffid.Dial(ctx, "unix:"+t.TempDir()+"/nobody.sock")
	if !errors.Is(err, ffid.ErrUnavailable) {
		t.Errorf("no daemon: %v", err)
	}
}

func jsonNumber(v any) json.Number { return json.Number(fmt.Sprint(v)) }

// The README's snippets that the other tests do not run.
func TestReadmeSnippets(t *testing.T) {
	ctx := context.Background()
	s := dial(t)
	libm := load(t, s, "libm.so.6", "double cos(double); double ldexp(double, int);")
	if v, err := libm.Func("ldexp").Call(ctx, 0.75, 4); err != nil || v != 12.0 {
		t.Errorf("ldexp: %v, %v", v, err)
	}
	pow, err := libm.Function(ctx, "double pow(double, double)")
	if err != nil {
		t.Fatal(err)
	}
	if v, err := pow.Call(ctx, 2.0, 10); err != nil || v != 1024.0 {
		t.Errorf("pow: %v, %v", v, err)
	}
	libc := load(t, s, "libc.so.6", "")
	closeFn, err := libc.Function(ctx, "int close(int)", ffid.WithErrno())
	if err != nil {
		t.Fatal(err)
	}
	if r, err := closeFn.Invoke(ctx, -1); err != nil || r.Value != int64(-1) || r.Errno != 9 {
		t.Errorf("close(-1): %v, %v", r, err)
	}
	buf, err := s.Alloc(ctx, 64)
	if err != nil {
		t.Fatal(err)
	}
	if err := libc.Cdef(ctx, "int snprintf(char *, size_t, const char *, ...);"); err != nil {
		t.Fatal(err)
	}
	if n, err := libc.Func("snprintf").Call(ctx, buf, 64, "%d", ffid.As("int", 42)); err != nil || n != int64(2) {
		t.Errorf("snprintf: %v, %v", n, err)
	}
	if text, err := buf.Read(ctx, 3); err != nil || string(text) != "42\x00" {
		t.Errorf("snprintf wrote %q, %v", text, err)
	}
	if err := libc.Cdef(ctx, "void qsort(void *, size_t, size_t, int (*)(const void *, const void *));"); err != nil {
		t.Fatal(err)
	}
	arr, err := s.New(ctx, "int[5]", []int32{5, -3, 9, 0, 2})
	if err != nil {
		t.Fatal(err)
	}
	compare, err := s.Callback(ctx, "int compare(const void *a, const void *b)",
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
		t.Fatal(err)
	}
	if _, err := libc.Func("qsort").Call(ctx, arr, 5, 4, compare); err != nil {
		t.Fatal(err)
	}
	if v, err := arr.Value(ctx, "int[5]"); err != nil || fmt.Sprint(v) != "[-3 0 2 5 9]" {
		t.Errorf("qsort: %v, %v", v, err)
	}
}

func TestOwnershipAndVariables(t *testing.T) {
	ctx := context.Background()
	s := dial(t)
	lib := load(t, s, fixture, "")
	strdup, err := lib.Function(ctx, "char *fxt_strdup(const char *)", ffid.ReleaseResult(""))
	if err != nil {
		t.Fatal(err)
	}
	if v, err := strdup.Call(ctx, "text"); err != nil || v != "text" {
		t.Errorf("strdup released: %v, %v", v, err)
	}
	adopting, err := lib.Function(ctx, "char *fxt_strdup(const char *)", ffid.AdoptResult(""))
	if err != nil {
		t.Fatal(err)
	}
	r, err := adopting.Invoke(ctx, "kept")
	if err != nil || r.Value != "kept" || r.Owned == nil {
		t.Fatalf("strdup adopted: %v, %v", r, err)
	}
	if text, err := r.Owned.Read(ctx, 5); err != nil || string(text) != "kept\x00" {
		t.Errorf("the adopted string: %q, %v", text, err)
	}
	if err := r.Owned.Free(ctx); err != nil {
		t.Error(err)
	}

	released, err := lib.Variable(ctx, "extern int fxt_released;")
	if err != nil {
		t.Fatal(err)
	}
	newObject, err := lib.Function(ctx, "void *fxt_object_new(int)", ffid.AdoptResult("fxt_object_release"))
	if err != nil {
		t.Fatal(err)
	}
	object, err := newObject.Call(ctx, 7)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := object.(*ffid.Memory)
	if !ok {
		t.Fatalf("an adopted result is %T", object)
	}
	if v, err := m.ReadValue(ctx, "int"); err != nil || v != int64(7) {
		t.Errorf("the object: %v, %v", v, err)
	}
	if err := m.Free(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := released.Value(ctx, "int"); err != nil || v != int64(1) {
		t.Errorf("fxt_released after Free: %v, %v", v, err)
	}

	// Adopted later, with a size: reads are bounds-checked.
	borrowed, err := lib.Function(ctx, "void *fxt_object_new(int)")
	if err != nil {
		t.Fatal(err)
	}
	p, err := borrowed.Call(ctx, 8)
	if err != nil {
		t.Fatal(err)
	}
	owned, err := s.Adopt(ctx, p.(ffid.Pointer), "fxt_object_release", lib, 4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := owned.Read(ctx, 8); !errors.Is(err, ffid.ErrOutOfBounds) {
		t.Errorf("reading past an adopted size: %v", err)
	}
	if err := owned.Free(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := released.Value(ctx, "int"); err != nil || v != int64(2) {
		t.Errorf("fxt_released after the second Free: %v, %v", v, err)
	}

	counter, err := lib.Variable(ctx, "extern int fxt_counter;")
	if err != nil {
		t.Fatal(err)
	}
	if err := counter.WriteValue(ctx, "int", 42); err != nil {
		t.Fatal(err)
	}
	get, err := lib.Function(ctx, "int fxt_counter_get(void)")
	if err != nil {
		t.Fatal(err)
	}
	if v, err := get.Call(ctx); err != nil || v != int64(42) {
		t.Errorf("fxt_counter_get after a write: %v, %v", v, err)
	}
}
