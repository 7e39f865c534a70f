package ffid

import (
	"context"
	"fmt"
	"time"

	"github.com/ffid/ffid/clients/go/ffidpb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// CallbackFunc is the body of a callback. args are the native caller's
// arguments as Function.Call returns results (pointers are borrowed
// Pointers, valid while the callback runs). It returns the callback's
// result (ignored for void) or an error, which gives the native caller the
// callback's default result and makes the native call fail with
// ErrCallbackFailed.
//
// ctx carries the invocation (InvocationFrom): calls, reads, writes,
// allocations and frees made with it run inside the callback, on the native
// thread that waits for it, so a callback may call back into the library,
// to any depth. Loading libraries, Cdef and resolving functions are refused
// there (ErrUnsupported): do them before.
type CallbackFunc func(ctx context.Context, args []any) (any, error)

// Callback is a Go function that native code can call through a function
// pointer: pass the *Callback wherever a function pointer is expected. It
// lives until Release or the session's end.
type Callback struct {
	session *Session
	handle  string
	fn      CallbackFunc
	typ     *ffidpb.FunctionType
}

// Handle returns the callback handle.
func (c *Callback) Handle() string { return c.handle }

// Type returns the signature it was prepared with.
func (c *Callback) Type() *ffidpb.FunctionType { return c.typ }

// Invocation is one call of a callback by native code.
type Invocation struct {
	session *Session
	id      uint64
	// Callback is the callback that was called.
	Callback *Callback
	// NativeThreadID is the Linux thread id of the native thread that
	// called it.
	NativeThreadID int64
}

type invocationKey struct{}

// InvocationFrom returns the invocation a callback's context carries, or
// nil.
func InvocationFrom(ctx context.Context) *Invocation {
	inv, _ := ctx.Value(invocationKey{}).(*Invocation)
	return inv
}

// CallbackOption configures a callback.
type CallbackOption func(*ffidpb.RegisterCallbackRequest)

// CallbackDefault sets what the native caller gets when the callback
// fails (zero if unset).
func CallbackDefault(value any) CallbackOption {
	return func(r *ffidpb.RegisterCallbackRequest) {
		if v, err := toValue(value, nil, nil, "default result"); err == nil {
			r.DefaultResult = v
		}
	}
}

// CallbackTimeout sets how long a native thread waits for one invocation's
// answer (default 60 s); past it the callback counts as failed.
func CallbackTimeout(timeout time.Duration) CallbackOption {
	return func(r *ffidpb.RegisterCallbackRequest) { r.Timeout = durationpb.New(timeout) }
}

// CallbackTerminatesWorker makes a failed callback end the worker instead
// of returning the default result (for libraries that cannot go on without
// the callback's real answer).
func CallbackTerminatesWorker() CallbackOption {
	return func(r *ffidpb.RegisterCallbackRequest) {
		r.FailurePolicy = ffidpb.CallbackFailurePolicy_CALLBACK_FAILURE_POLICY_TERMINATE_WORKER
	}
}

// Callback registers fn as a callback with the C signature prototype (e.g.
// "int compare(const void *a, const void *b)"; the name is for messages).
func (s *Session) Callback(ctx context.Context, prototype string, fn CallbackFunc,
	options ...CallbackOption) (*Callback, error) {
	request := &ffidpb.RegisterCallbackRequest{Session: s.id,
		Signature: &ffidpb.RegisterCallbackRequest_Declaration{Declaration: prototype}}
	for _, option := range options {
		option(request)
	}
	var response *ffidpb.RegisterCallbackResponse
	if s.inCallback(ctx) {
		result, err := s.streamCall(ctx, &ffidpb.StreamCall{
			Request: &ffidpb.StreamCall_RegisterCallback{RegisterCallback: request}})
		if err != nil {
			return nil, err
		}
		response = result.GetRegisterCallback()
	} else {
		if err := s.check(); err != nil {
			return nil, err
		}
		var err error
		response, err = s.client.rpc.RegisterCallback(ctx, request)
		if err != nil {
			return nil, fromRPC(err)
		}
	}
	c := &Callback{session: s, handle: response.GetCallback(), fn: fn, typ: response.GetType()}
	s.mu.Lock()
	s.callbacks[c.handle] = c
	s.mu.Unlock()
	return c, nil
}

// Release releases the callback; native code that still calls it gets
// its failure behaviour, reported, never a crash.
func (c *Callback) Release(ctx context.Context) error {
	s := c.session
	request := &ffidpb.ReleaseCallbackRequest{Session: s.id, Callback: c.handle}
	var err error
	if s.inCallback(ctx) {
		_, err = s.streamCall(ctx, &ffidpb.StreamCall{
			Request: &ffidpb.StreamCall_ReleaseCallback{ReleaseCallback: request}})
	} else if err = s.check(); err == nil {
		_, err = s.client.rpc.ReleaseCallback(ctx, request)
		err = fromRPC(err)
	}
	if err == nil {
		s.mu.Lock()
		delete(s.callbacks, c.handle)
		s.mu.Unlock()
	}
	return err
}

// invoke runs one invocation and sends its result.
func (s *Session) invoke(invocation *ffidpb.CallbackInvocation) {
	s.mu.Lock()
	c := s.callbacks[invocation.GetCallback()]
	s.mu.Unlock()
	answer := &ffidpb.CallbackResult{Invocation: invocation.GetInvocation()}
	if c == nil {
		answer.Error = &ffidpb.CallbackError{Message: "this client has no callback " + invocation.GetCallback()}
	} else {
		inv := &Invocation{session: s, id: invocation.GetInvocation(), Callback: c,
			NativeThreadID: invocation.GetNativeThreadId()}
		ctx := context.WithValue(context.Background(), invocationKey{}, inv)
		args := make([]any, 0, len(invocation.GetArguments()))
		for _, arg := range invocation.GetArguments() {
			args = append(args, fromValue(arg, s))
		}
		result, err := runCallback(ctx, c.fn, args)
		var returnType *ffidpb.TypeDescriptor
		if c.typ != nil {
			returnType = c.typ.GetReturnType()
		}
		if err == nil && result != nil && !isVoid(returnType) {
			answer.Result, err = toValue(result, returnType, s.lookupType, "the callback's result")
		}
		if err != nil {
			answer.Error = &ffidpb.CallbackError{Message: err.Error()}
		}
	}
	_ = s.send(&ffidpb.ConnectRequest{Kind: &ffidpb.ConnectRequest_CallbackResult{CallbackResult: answer}})
}

// runCallback runs fn, turning a panic into an error.
func runCallback(ctx context.Context, fn CallbackFunc, args []any) (result any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("the callback panicked: %v", p)
		}
	}()
	return fn(ctx, args)
}

func isVoid(d *ffidpb.TypeDescriptor) bool {
	return d == nil || (d.GetKind() != nil && d.GetScalar() == ffidpb.ScalarKind_SCALAR_KIND_VOID &&
		d.GetPointer() == nil)
}
