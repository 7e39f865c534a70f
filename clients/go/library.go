package ffid

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/ffid/ffid/clients/go/ffidpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

// Library is a shared library loaded in a session's worker.
type Library struct {
	session *Session
	handle  string
	path    string

	mu    sync.Mutex
	funcs map[string]*Function // Func's cache
}

// Path returns the real path the daemon loaded.
func (l *Library) Path() string { return l.path }

// Handle returns the library handle.
func (l *Library) Handle() string { return l.handle }

// Cdef declares C types and prototypes for the session (see Session.Cdef);
// the prototypes are then called with Func.
func (l *Library) Cdef(ctx context.Context, source string) error {
	return l.session.Cdef(ctx, source)
}

// Func returns the function `name` of the library, declared by an earlier
// Cdef. It is resolved on its first call (after which it may be called
// inside callbacks too); Resolve resolves it now.
func (l *Library) Func(name string, options ...FuncOption) *Function {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(options) == 0 {
		if f, ok := l.funcs[name]; ok {
			return f
		}
	}
	f := &Function{library: l, symbol: name}
	for _, option := range options {
		option(f)
	}
	if len(options) == 0 {
		l.funcs[name] = f
	}
	return f
}

// Function resolves one C prototype ("double frexp(double x, int *exp)")
// in the library; its name is the symbol.
func (l *Library) Function(ctx context.Context, prototype string, options ...FuncOption) (*Function, error) {
	f := &Function{library: l, prototype: prototype}
	for _, option := range options {
		option(f)
	}
	if err := f.Resolve(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

// FuncOption configures a Function.
type FuncOption func(*Function)

// Out marks pointer parameters (by name, as the prototype names them) as
// out-parameters: they take no argument, ffid passes a temporary, and its
// value after the call is in Result.Out.
func Out(names ...string) FuncOption {
	return func(f *Function) { f.out = append(f.out, names...) }
}

// InOut marks pointer parameters whose argument is a value of the pointee
// type, copied in, and whose value after the call is in Result.Out.
func InOut(names ...string) FuncOption {
	return func(f *Function) { f.inout = append(f.inout, names...) }
}

// WithErrno captures errno right after every native call (Result.Errno).
func WithErrno() FuncOption {
	return func(f *Function) { f.errno = true }
}

// Function is a native function of a library. Calls are safe for
// concurrent use; they run in the worker in the order they arrive.
type Function struct {
	library   *Library
	symbol    string // Func: a cdef'd name
	prototype string // Function: one prototype
	out       []string
	inout     []string
	errno     bool
	// What happens to a returned pointer (ReleaseResult, AdoptResult).
	ownership  ffidpb.ResultOwnership
	destructor string

	mu     sync.Mutex
	handle string
	typ    *ffidpb.FunctionType
}

// Result is everything a call returned.
type Result struct {
	// Value is the return value (nil for void); see Function.Call.
	Value any
	// Out holds the out- and in/out-parameters' values after the call, by
	// parameter name (or "#N" for an unnamed parameter N, 0-based).
	Out map[string]any
	// Errno is errno right after the call, with WithErrno.
	Errno int
	// Owned is, with AdoptResult on a function returning a string, the
	// adopted pointer (Value is the string copied out); nil otherwise.
	Owned *Memory
}

// Resolve looks the function up and prepares its call interface now; Call
// does it on first use.
func (f *Function) Resolve(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.handle != "" {
		return nil
	}
	s := f.library.session
	if err := s.unaryAllowed(ctx, "resolving a function"); err != nil {
		return err
	}
	var typ *ffidpb.FunctionType
	symbol := f.symbol
	if f.prototype != "" {
		response, err := s.client.rpc.ParseDeclarations(ctx, &ffidpb.ParseDeclarationsRequest{
			Session: s.id, Source: strings.TrimSuffix(strings.TrimSpace(f.prototype), ";") + ";"})
		if err != nil {
			return fromRPC(err)
		}
		if len(response.GetFunctions()) != 1 {
			return clientError(ReasonDeclarationInvalid, codes.InvalidArgument,
				"%q is not one C prototype", f.prototype)
		}
		symbol = response.GetFunctions()[0].GetName()
		typ = response.GetFunctions()[0].GetType()
	} else {
		s.mu.Lock()
		declaration, ok := s.functions[f.symbol]
		s.mu.Unlock()
		if !ok {
			return clientError(ReasonSymbolNotFound, codes.NotFound,
				"%s is not declared: give its prototype to Cdef first, or use Library.Function", f.symbol)
		}
		typ = declaration.GetType()
	}
	typ = proto.Clone(typ).(*ffidpb.FunctionType)
	if err := markDirections(typ, f.out, ffidpb.PointerDirection_POINTER_DIRECTION_OUT); err != nil {
		return err
	}
	if err := markDirections(typ, f.inout, ffidpb.PointerDirection_POINTER_DIRECTION_INOUT); err != nil {
		return err
	}
	response, err := s.client.rpc.ResolveFunction(ctx, &ffidpb.ResolveFunctionRequest{
		Session: s.id, Library: f.library.handle, Symbol: symbol,
		Signature: &ffidpb.ResolveFunctionRequest_Type{Type: typ}})
	if err != nil {
		return fromRPC(err)
	}
	f.symbol = response.GetSymbol()
	f.handle = response.GetFunction()
	f.typ = response.GetType()
	return nil
}

func markDirections(typ *ffidpb.FunctionType, names []string, direction ffidpb.PointerDirection) error {
	for _, name := range names {
		found := false
		for _, parameter := range typ.GetParameters() {
			if parameter.GetName() == name {
				if parameter.GetType().GetPointer() == nil {
					return clientError(ReasonTypeMismatch, codes.InvalidArgument,
						"parameter %q is not a pointer and cannot be an out-parameter", name)
				}
				parameter.GetType().GetPointer().Direction = direction
				found = true
			}
		}
		if !found {
			return clientError(ReasonInvalidRequest, codes.InvalidArgument, "no parameter named %q", name)
		}
	}
	return nil
}

// Name returns the function's symbol.
func (f *Function) Name() string { return f.symbol }

// Type returns the signature the function was prepared with (nil before it
// is resolved).
func (f *Function) Type() *ffidpb.FunctionType {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.typ
}

// Call calls the function and returns its result. Arguments are Go values
// converted to the parameters' C types: integers, floats, bool, string
// (UTF-8, or an enum constant's name), []byte, nil (NULL), Record or
// map[string]any (a struct by member name), slices (arrays), *Memory,
// Pointer, *Callback; after a variadic function's fixed parameters, C's
// promotions apply (ffid.As pins a type). Results are int64, uint64,
// float64, bool, string, nil (void or NULL), Pointer, Record, []any, or an
// enum's constant name.
//
// The context's deadline is the call's: when it passes, the daemon kills
// the worker (native code cannot be interrupted safely) and the call fails
// with ErrDeadlineExceeded. With a context passed to a callback, the call
// runs inside that callback, on the native thread waiting for it.
func (f *Function) Call(ctx context.Context, args ...any) (any, error) {
	result, err := f.Invoke(ctx, args...)
	if err != nil {
		return nil, err
	}
	return result.Value, nil
}

// Invoke is Call returning out-parameters and errno too.
func (f *Function) Invoke(ctx context.Context, args ...any) (*Result, error) {
	s := f.library.session
	if err := s.check(); err != nil {
		return nil, err
	}
	if err := f.Resolve(ctx); err != nil {
		return nil, err
	}
	request, err := f.request(args)
	if err != nil {
		return nil, err
	}
	var response *ffidpb.CallResponse
	if s.inCallback(ctx) {
		result, err := s.streamCall(ctx, &ffidpb.StreamCall{Request: &ffidpb.StreamCall_Call{Call: request}})
		if err != nil {
			return nil, err
		}
		response = result.GetCall()
	} else {
		response, err = s.client.rpc.Call(ctx, request)
		if err != nil {
			return nil, fromRPC(err)
		}
	}
	result := &Result{Value: fromValue(response.GetResult(), s), Errno: int(response.GetErrnoValue())}
	if f.ownership == ffidpb.ResultOwnership_RESULT_OWNERSHIP_ADOPT {
		if p, ok := result.Value.(Pointer); ok {
			result.Value = &Memory{Pointer: p}
		} else if response.GetResultPointer() != nil {
			result.Owned = &Memory{Pointer: pointerFrom(s, response.GetResultPointer())}
		}
	}
	if len(response.GetOutValues()) > 0 {
		result.Out = map[string]any{}
		for index, value := range response.GetOutValues() {
			name := fmt.Sprintf("#%d", index)
			if int(index) < len(f.typ.GetParameters()) && f.typ.GetParameters()[index].GetName() != "" {
				name = f.typ.GetParameters()[index].GetName()
			}
			result.Out[name] = fromValue(value, s)
		}
	}
	return result, nil
}

// request converts the arguments; out-parameters take none.
func (f *Function) request(args []any) (*ffidpb.CallRequest, error) {
	s := f.library.session
	request := &ffidpb.CallRequest{Session: s.id, Function: f.handle, CaptureErrno: f.errno,
		ResultOwnership: f.ownership, ResultDestructor: f.destructor}
	next := 0
	for i, parameter := range f.typ.GetParameters() {
		what := fmt.Sprintf("parameter %d of '%s'", i+1, f.symbol)
		pointer := parameter.GetType().GetPointer()
		switch {
		case pointer != nil && pointer.GetDirection() == ffidpb.PointerDirection_POINTER_DIRECTION_OUT:
			request.Arguments = append(request.Arguments, &ffidpb.Value{})
			continue
		case next >= len(args):
			return nil, f.countError(len(args))
		}
		d := parameter.GetType()
		if pointer != nil && pointer.GetDirection() == ffidpb.PointerDirection_POINTER_DIRECTION_INOUT {
			d = pointer.GetPointee()
		}
		value, err := toValue(args[next], d, s.lookupType, what)
		if err != nil {
			return nil, err
		}
		request.Arguments = append(request.Arguments, value)
		next++
	}
	if next < len(args) && !f.typ.GetVariadic() {
		return nil, f.countError(len(args))
	}
	for j, arg := range args[next:] {
		what := fmt.Sprintf("parameter %d (variadic) of '%s'", next+j+1, f.symbol)
		typ, err := variadicType(arg)
		if err != nil {
			return nil, err
		}
		value, err := toValue(arg, nil, s.lookupType, what)
		if err != nil {
			return nil, err
		}
		request.VariadicTypes = append(request.VariadicTypes, typ)
		request.Arguments = append(request.Arguments, value)
	}
	return request, nil
}

func (f *Function) countError(given int) error {
	expected := len(f.typ.GetParameters()) - len(f.out)
	more := ""
	if f.typ.GetVariadic() {
		more = " or more"
	}
	return clientError(ReasonArgumentCount, codes.InvalidArgument,
		"%s takes %d argument(s)%s, got %d", f.symbol, expected, more, given)
}

// ReleaseResult makes a function returning a pointer or string release it
// with destructor (a symbol of the library or the global scope; "" means
// free) right after the call, once a string result is copied out: for
// `char *strdup(const char *)`.
func ReleaseResult(destructor string) FuncOption {
	return func(f *Function) {
		f.ownership = ffidpb.ResultOwnership_RESULT_OWNERSHIP_RELEASE
		f.destructor = destructor
	}
}

// AdoptResult makes the session own the pointer a function returns: the
// result is a *Memory (for a string function, Result.Value is the string
// and Result.Owned the pointer) that the session releases with destructor
// ("" means free) on Free or at its end.
func AdoptResult(destructor string) FuncOption {
	return func(f *Function) {
		f.ownership = ffidpb.ResultOwnership_RESULT_OWNERSHIP_ADOPT
		f.destructor = destructor
	}
}

// Variable looks up a global variable of the library, declared as a C
// declaration ("extern int counter;", over the session's types): memory of
// the variable's size that the library owns (Free refuses it), read and
// written with Value/WriteValue and its type.
func (l *Library) Variable(ctx context.Context, declaration string) (*Memory, error) {
	s := l.session
	if err := s.unaryAllowed(ctx, "resolving a variable"); err != nil {
		return nil, err
	}
	response, err := s.client.rpc.ResolveVariable(ctx, &ffidpb.ResolveVariableRequest{
		Session: s.id, Library: l.handle,
		VariableType: &ffidpb.ResolveVariableRequest_Declaration{Declaration: declaration}})
	if err != nil {
		return nil, fromRPC(err)
	}
	return &Memory{Pointer: Pointer{session: s, handle: response.GetMemory(), address: response.GetAddress()},
		size: 0}, nil
}
