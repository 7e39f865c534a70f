package ffid_test

// The Go runner of the conformance list, tests/conformance/scenarios.json
// (format: tests/conformance/README.md): every scenario as a subtest of
// TestConformance, through this package's API.

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	ffid "github.com/ffid/ffid/clients/go"
)

var scenariosPath = pathFromEnv("FFID_CONFORMANCE_SCENARIOS", "../../tests/conformance/scenarios.json")

type object = map[string]any

func field[T any](o object, key string) (T, bool) {
	v, ok := o[key].(T)
	return v, ok
}

func str(o object, key string) string {
	s, _ := field[string](o, key)
	return s
}

func number(o object, key string) int64 {
	n, ok := field[json.Number](o, key)
	if !ok {
		return 0
	}
	i, _ := n.Int64()
	return i
}

// substitute fills the file's placeholders.
func substitute(text string) string {
	return strings.NewReplacer(
		"{fixture}", fixture,
		"{callbacks_fixture}", callbacksFixture,
		"{fixture_dir}", filepath.Dir(fixture),
		"{allowed_dir}", testDaemon.allowedDir,
		"{not_allowed_dir}", testDaemon.notAllowedDir,
	).Replace(text)
}

func loadScenarios(t *testing.T) object {
	t.Helper()
	data, err := os.ReadFile(scenariosPath)
	if err != nil {
		t.Fatal(err)
	}
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.UseNumber()
	var root object
	if err := decoder.Decode(&root); err != nil {
		t.Fatalf("%s: %v", scenariosPath, err)
	}
	return root
}

// tagged returns the value of {"$tag": value}.
func tagged(v any, tag string) (any, bool) {
	o, ok := v.(object)
	if !ok || len(o) != 1 {
		return nil, false
	}
	value, ok := o[tag]
	return value, ok
}

// bindings are a scenario's memory and callback, by name.
type bindings map[string]any

// toGo converts a value of the file to a Go argument.
func toGo(t *testing.T, v any, bound bindings) any {
	if name, ok := tagged(v, "$ref"); ok {
		value, ok := bound[name.(string)]
		if !ok {
			t.Fatalf("unknown $ref %v", name)
		}
		return value
	}
	if digits, ok := tagged(v, "$int"); ok {
		i, ok := new(big.Int).SetString(digits.(string), 10)
		if !ok {
			t.Fatalf("bad $int %v", digits)
		}
		if i.IsInt64() {
			return i.Int64()
		}
		return i.Uint64()
	}
	if special, ok := tagged(v, "$double"); ok {
		return specialDouble(t, special.(string))
	}
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, err := x.Float64()
		if err != nil {
			t.Fatalf("bad number %v", x)
		}
		return f
	case object:
		record := ffid.Record{}
		for name, member := range x {
			record[name] = toGo(t, member, bound)
		}
		return record
	case []any:
		list := make([]any, len(x))
		for i, element := range x {
			list[i] = toGo(t, element, bound)
		}
		return list
	}
	return v // string, bool, nil
}

func specialDouble(t *testing.T, name string) float64 {
	switch name {
	case "nan":
		return math.NaN()
	case "inf":
		return math.Inf(1)
	case "-inf":
		return math.Inf(-1)
	case "-0":
		return math.Copysign(0, -1)
	}
	t.Fatalf("unknown $double %q", name)
	return 0
}

func arguments(t *testing.T, o object, bound bindings) []any {
	list, _ := field[[]any](o, "arguments")
	args := make([]any, len(list))
	for i, v := range list {
		args[i] = toGo(t, v, bound)
	}
	return args
}

// match reports how actual differs from the expectation, or "".
func match(expected, actual any) string {
	differ := func() string { return fmt.Sprintf("expected %v, got %#v", show(expected), actual) }
	if digits, ok := tagged(expected, "$int"); ok {
		switch a := actual.(type) {
		case int64:
			if strconv.FormatInt(a, 10) == digits {
				return ""
			}
		case uint64:
			if strconv.FormatUint(a, 10) == digits {
				return ""
			}
		}
		return differ()
	}
	if special, ok := tagged(expected, "$double"); ok {
		f, ok := actual.(float64)
		switch {
		case !ok:
		case special == "nan" && math.IsNaN(f), special == "inf" && math.IsInf(f, 1),
			special == "-inf" && math.IsInf(f, -1), special == "-0" && f == 0 && math.Signbit(f):
			return ""
		}
		return differ()
	}
	switch e := expected.(type) {
	case nil:
		if actual == nil {
			return ""
		}
		if p, ok := actual.(ffid.Pointer); ok && p.IsNull() {
			return ""
		}
	case bool, string:
		if actual == expected {
			return ""
		}
	case json.Number:
		switch a := actual.(type) {
		case int64:
			if e.String() == strconv.FormatInt(a, 10) {
				return ""
			}
			if f, err := e.Float64(); err == nil && f == float64(a) {
				return ""
			}
		case uint64:
			if e.String() == strconv.FormatUint(a, 10) {
				return ""
			}
		case float64:
			if f, err := e.Float64(); err == nil && f == a {
				return ""
			}
		}
	case object:
		record, ok := actual.(ffid.Record)
		if !ok || len(record) != len(e) {
			return differ()
		}
		for name, member := range e {
			if why := match(member, record[name]); why != "" {
				return name + ": " + why
			}
		}
		return ""
	case []any:
		list, ok := actual.([]any)
		if !ok || len(list) != len(e) {
			return differ()
		}
		for i := range e {
			if why := match(e[i], list[i]); why != "" {
				return fmt.Sprintf("[%d]: %s", i, why)
			}
		}
		return ""
	}
	return differ()
}

func show(v any) string {
	data, _ := json.Marshal(v)
	return string(data)
}

// expectError checks err against expect's "error" (none: err must be nil).
// It returns whether the scenario can go on (no error).
func expectError(t *testing.T, err error, expect object, what string) bool {
	t.Helper()
	reason := str(expect, "error")
	switch {
	case reason == "" && err != nil:
		t.Errorf("%s: %v", what, err)
	case reason != "" && err == nil:
		t.Errorf("%s: succeeded, expected %s", what, reason)
	case reason != "" && !errors.Is(err, &ffid.Error{Reason: ffid.Reason(reason)}):
		t.Errorf("%s: %v, expected %s", what, err, reason)
	case reason != "":
		checkCrash(t, err, expect)
	}
	return err == nil
}

func checkCrash(t *testing.T, err error, expect object) {
	t.Helper()
	crash, ok := field[object](expect, "crash")
	if !ok {
		return
	}
	var e *ffid.Error
	if !errors.As(err, &e) || e.Crash == nil {
		t.Errorf("no crash report in %v", err)
		return
	}
	for key, value := range crash {
		var actual any
		switch key {
		case "signal_name":
			actual = e.Crash.GetSignalName()
		case "function":
			actual = e.Crash.GetFunction()
		case "limit":
			actual = e.Crash.GetLimit()
		case "syscall_name":
			actual = e.Crash.GetSyscallName()
		case "exit_code":
			actual = int64(e.Crash.GetExitCode())
		default:
			t.Errorf("unknown crash field %s", key)
			continue
		}
		if why := match(value, actual); why != "" {
			t.Errorf("crash report %s: %s", key, why)
		}
	}
}

// checkResult compares a call's outcome with expect.
func checkResult(t *testing.T, result *ffid.Result, err error, expect object) {
	t.Helper()
	if !expectError(t, err, expect, "call") {
		return
	}
	if expected, ok := expect["result"]; ok {
		if why := match(expected, result.Value); why != "" {
			t.Errorf("result: %s", why)
		}
	}
	if expected, ok := field[json.Number](expect, "errno"); ok {
		if e, _ := expected.Int64(); int(e) != result.Errno {
			t.Errorf("errno: expected %d, got %d", e, result.Errno)
		}
	}
	if out, ok := field[object](expect, "out"); ok {
		for name, expected := range out {
			if why := match(expected, result.Out[name]); why != "" {
				t.Errorf("out %s: %s", name, why)
			}
		}
	}
}

func sessionOptions(o object) []ffid.Option {
	var options []ffid.Option
	session, ok := field[object](o, "session")
	if !ok {
		return nil
	}
	switch str(session, "restart_policy") {
	case "restart":
		options = append(options, ffid.WithRestartPolicy(ffid.Restart))
	case "never":
		options = append(options, ffid.WithRestartPolicy(ffid.RestartNever))
	}
	if limits, ok := field[object](session, "limits"); ok {
		options = append(options, ffid.WithLimits(ffid.Limits{
			AddressSpaceBytes: uint64(number(limits, "address_space_bytes")),
			CPUSeconds:        uint64(number(limits, "cpu_seconds")),
			OpenFiles:         uint64(number(limits, "open_files")),
			FileSizeBytes:     uint64(number(limits, "file_size_bytes")),
		}))
	}
	return options
}

// funcOptions are a scenario's (or step's) out-parameters and errno.
func funcOptions(o object) []ffid.FuncOption {
	var options []ffid.FuncOption
	if out, ok := field[[]any](o, "out"); ok {
		for _, name := range out {
			options = append(options, ffid.Out(name.(string)))
		}
	}
	if flag, _ := field[bool](o, "errno"); flag {
		options = append(options, ffid.WithErrno())
	}
	return options
}

// callArgs applies variadic_types: the arguments after the fixed ones get
// their C types.
func callArgs(t *testing.T, o object, f *ffid.Function, bound bindings) []any {
	args := arguments(t, o, bound)
	types, ok := field[[]any](o, "variadic_types")
	if !ok {
		return args
	}
	fixed := len(f.Type().GetParameters())
	for i, name := range types {
		if fixed+i < len(args) {
			args[fixed+i] = ffid.As(name.(string), args[fixed+i])
		}
	}
	return args
}

// scenarioRunner holds one scenario's session and library.
type scenarioRunner struct {
	t       *testing.T
	ctx     context.Context
	spec    object
	session *ffid.Session
	library *ffid.Library
}

// prepare loads the library and runs the cdef; false if one failed (as
// expected or not).
func (r *scenarioRunner) prepare(expect object) bool {
	var err error
	r.library, err = r.session.Load(r.ctx, substitute(str(r.spec, "library")))
	if err == nil {
		if cdef := str(r.spec, "cdef"); cdef != "" {
			err = r.library.Cdef(r.ctx, cdef)
		}
	}
	if err != nil {
		expectError(r.t, err, expect, "load/cdef")
		return false
	}
	return true
}

// call resolves o's function (default: fallback) and calls it.
func (r *scenarioRunner) call(o object, fallback string, bound bindings) (*ffid.Function, bool) {
	expect, _ := field[object](o, "expect")
	prototype := str(o, "function")
	if prototype == "" {
		prototype = fallback
	}
	f, err := r.library.Function(r.ctx, prototype, funcOptions(o)...)
	if err != nil {
		expectError(r.t, err, expect, "resolve")
		return nil, false
	}
	ctx := r.ctx
	if ms := number(o, "timeout_ms"); ms > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(ms)*time.Millisecond)
		defer cancel()
	}
	result, err := f.Invoke(ctx, callArgs(r.t, o, f, bound)...)
	checkResult(r.t, result, err, expect)
	return f, err == nil
}

func (r *scenarioRunner) after(bound bindings) {
	if after, ok := field[object](r.spec, "after"); ok {
		r.call(after, str(r.spec, "function"), bound)
	}
}

func (r *scenarioRunner) runCall(closeFirst bool) {
	expect, _ := field[object](r.spec, "expect")
	if !r.prepare(expect) {
		return
	}
	if closeFirst {
		f, err := r.library.Function(r.ctx, str(r.spec, "function"))
		if err != nil {
			r.t.Fatal(err)
		}
		if err := r.session.Close(); err != nil {
			r.t.Fatal(err)
		}
		_, err = f.Call(r.ctx, arguments(r.t, r.spec, nil)...)
		expectError(r.t, err, expect, "call after Close")
		return
	}
	r.call(r.spec, "", nil)
	r.after(nil)
}

func pointerOf(t *testing.T, bound bindings, name string) ffid.Pointer {
	switch v := bound[name].(type) {
	case *ffid.Memory:
		return v.Pointer
	case ffid.Pointer:
		return v
	}
	t.Fatalf("%q is not bound to memory", name)
	return ffid.Pointer{}
}

func (r *scenarioRunner) runMemory() {
	if !r.prepare(nil) {
		return
	}
	bound := bindings{}
	steps, _ := field[[]any](r.spec, "steps")
	for i, entry := range steps {
		step := entry.(object)
		op := str(step, "op")
		what := fmt.Sprintf("step %d (%s)", i, op)
		expect, _ := field[object](step, "expect")
		at := func() ffid.Pointer {
			return pointerOf(r.t, bound, str(step, "memory")).Add(uint64(number(step, "offset")))
		}
		switch op {
		case "alloc":
			m, err := r.session.Alloc(r.ctx, uint64(number(step, "size")))
			if expectError(r.t, err, expect, what) {
				bound[str(step, "as")] = m
			}
		case "new":
			m, err := r.session.New(r.ctx, str(step, "type"), toGo(r.t, step["value"], bound))
			if expectError(r.t, err, expect, what) {
				bound[str(step, "as")] = m
			}
		case "write":
			data, err := hex.DecodeString(str(step, "hex"))
			if err != nil {
				r.t.Fatal(err)
			}
			expectError(r.t, at().Write(r.ctx, data), expect, what)
		case "read":
			data, err := at().Read(r.ctx, int(number(step, "length")))
			if expectError(r.t, err, expect, what) && expect["hex"] != nil {
				if got := hex.EncodeToString(data); got != str(expect, "hex") {
					r.t.Errorf("%s: read %s, expected %s", what, got, str(expect, "hex"))
				}
			}
		case "write_value":
			err := at().WriteValue(r.ctx, str(step, "type"), toGo(r.t, step["value"], bound))
			expectError(r.t, err, expect, what)
		case "read_value":
			value, err := at().ReadValue(r.ctx, str(step, "type"))
			if expectError(r.t, err, expect, what) {
				if expected, ok := expect["value"]; ok {
					if why := match(expected, value); why != "" {
						r.t.Errorf("%s: %s", what, why)
					}
				}
			}
		case "free":
			m, ok := bound[str(step, "memory")].(*ffid.Memory)
			if !ok {
				r.t.Fatalf("%s: %q is not owned memory", what, str(step, "memory"))
			}
			expectError(r.t, m.Free(r.ctx), expect, what)
		case "call":
			f, err := r.library.Function(r.ctx, str(step, "function"), funcOptions(step)...)
			if err != nil {
				r.t.Fatalf("%s: %v", what, err)
			}
			result, err := f.Invoke(r.ctx, callArgs(r.t, step, f, bound)...)
			checkResult(r.t, result, err, expect)
			if err == nil && str(step, "as") != "" {
				p, ok := result.Value.(ffid.Pointer)
				if !ok {
					r.t.Fatalf("%s: the result %#v is not a pointer", what, result.Value)
				}
				bound[str(step, "as")] = p
			}
		default:
			r.t.Fatalf("unknown op %q", op)
		}
	}
}

func (r *scenarioRunner) runCallback() {
	expect, _ := field[object](r.spec, "expect")
	if !r.prepare(expect) {
		return
	}
	target, err := r.library.Function(r.ctx, str(r.spec, "function"))
	if err != nil {
		r.t.Fatal(err)
	}
	spec, _ := field[object](r.spec, "callback")
	behaviour := str(spec, "behaviour")
	var mu sync.Mutex
	invocations := 0
	threads := map[int64]bool{}
	var self *ffid.Callback
	body := func(ctx context.Context, args []any) (any, error) {
		mu.Lock()
		invocations++
		threads[ffid.InvocationFrom(ctx).NativeThreadID] = true
		mu.Unlock()
		switch behaviour {
		case "add":
			var sum int64
			for _, arg := range args {
				sum += arg.(int64)
			}
			return sum, nil
		case "compare_ints":
			a, err := args[0].(ffid.Pointer).ReadValue(ctx, "int")
			if err != nil {
				return nil, err
			}
			b, err := args[1].(ffid.Pointer).ReadValue(ctx, "int")
			if err != nil {
				return nil, err
			}
			x, y := a.(int64), b.(int64)
			switch {
			case x < y:
				return -1, nil
			case x > y:
				return 1, nil
			}
			return 0, nil
		case "store_int":
			return nil, args[0].(ffid.Pointer).WriteValue(ctx, "int", args[1])
		case "nest":
			depth := args[0].(int64)
			if depth == 0 {
				return 0, nil
			}
			return target.Call(ctx, self, depth-1)
		case "fail":
			return nil, errors.New("conformance: the callback fails")
		}
		return nil, fmt.Errorf("unknown behaviour %q", behaviour)
	}
	self, err = r.session.Callback(r.ctx, str(spec, "declaration"), body)
	if err != nil {
		r.t.Fatal(err)
	}
	bound := bindings{"callback": self}
	memoryType := ""
	if memory, ok := field[object](r.spec, "memory"); ok {
		memoryType = str(memory, "type")
		m, err := r.session.New(r.ctx, memoryType, toGo(r.t, memory["value"], bound))
		if err != nil {
			r.t.Fatal(err)
		}
		bound["memory"] = m
	}
	result, err := target.Invoke(r.ctx, callArgs(r.t, r.spec, target, bound)...)
	checkResult(r.t, result, err, expect)
	mu.Lock()
	if n, ok := field[json.Number](expect, "invocations"); ok && n.String() != strconv.Itoa(invocations) {
		r.t.Errorf("invocations: expected %s, got %d", n, invocations)
	}
	if n := number(expect, "min_threads"); len(threads) < int(n) {
		r.t.Errorf("the callback ran on %d native threads, expected at least %d", len(threads), n)
	}
	mu.Unlock()
	if expected, ok := expect["memory"]; ok {
		value, err := bound["memory"].(*ffid.Memory).Value(r.ctx, memoryType)
		if err != nil {
			r.t.Fatal(err)
		}
		if why := match(expected, value); why != "" {
			r.t.Errorf("memory: %s", why)
		}
	}
	r.after(bound)
}

func TestConformance(t *testing.T) {
	root := loadScenarios(t)
	setup, _ := field[[]any](root, "setup")
	for _, entry := range setup {
		step := entry.(object)
		switch {
		case step["write"] != nil:
			if err := os.WriteFile(substitute(str(step, "write")), []byte(str(step, "text")), 0o600); err != nil {
				t.Fatal(err)
			}
		case step["copy"] != nil:
			data, err := os.ReadFile(substitute(str(step, "copy")))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(substitute(str(step, "to")), data, 0o600); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unknown set-up entry %v", step)
		}
	}
	scenarios, _ := field[[]any](root, "scenarios")
	if len(scenarios) == 0 {
		t.Fatal("no scenarios")
	}
	names := map[string]bool{}
	for _, entry := range scenarios {
		spec := entry.(object)
		name := str(spec, "name")
		if names[name] {
			t.Errorf("two scenarios are named %q", name)
		}
		names[name] = true
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			kind := str(spec, "kind")
			session, err := ffid.Dial(ctx, testDaemon.address, sessionOptions(spec)...)
			if kind == "session" {
				expect, _ := field[object](spec, "expect")
				expectError(t, err, expect, "session")
				if err == nil {
					session.Close()
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer session.Close()
			r := &scenarioRunner{t: t, ctx: ctx, spec: spec, session: session}
			switch kind {
			case "call", "deadline", "crash":
				r.runCall(false)
			case "closed_session":
				r.runCall(true)
			case "memory":
				r.runMemory()
			case "callback":
				r.runCallback()
			default:
				t.Fatalf("unknown kind %q", kind)
			}
		})
	}
	kinds := map[string]int{}
	for _, entry := range scenarios {
		kinds[str(entry.(object), "kind")]++
	}
	keys := make([]string, 0, len(kinds))
	for k := range kinds {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	t.Logf("%d scenarios (%v)", len(scenarios), keys)
}
