package ffid

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ffid/ffid/clients/go/ffidpb"
	"google.golang.org/grpc/codes"
)

// Session is one session on the daemon: one sandboxed worker process, with
// the libraries, functions, memory and callbacks made in it. A crash in
// native code kills the worker, never this process: the call fails with
// ErrWorkerCrashed.
//
// A Session keeps a Connect stream open for as long as it lives (the
// daemon deletes the session when it closes), which also carries callback
// invocations. It is safe for concurrent use. Close it when done.
type Session struct {
	client     *Client
	ownsClient bool
	id         string

	stream       ffidpb.Ffi_ConnectClient
	cancelStream context.CancelFunc
	sendMu       sync.Mutex // serializes stream.Send
	readerDone   chan struct{}

	mu        sync.Mutex
	closed    bool
	streamErr error // why the stream ended
	pending   map[uint64]chan *ffidpb.StreamResult
	callbacks map[string]*Callback
	types     map[string]*ffidpb.TypeDescriptor // cdef'd types by name
	functions map[string]*ffidpb.FunctionDeclaration
	typeNames map[string]*ffidpb.TypeDescriptor // type names resolved for typed memory
	nextTag   atomic.Uint64
	// Set once the daemon turned WriteStream/ReadStream down as unknown
	// (a daemon older than them): big transfers then go as unary pieces.
	piecesOnly atomic.Bool
}

// NewSession starts a session (and its worker) on the daemon.
func (c *Client) NewSession(ctx context.Context, options ...Option) (*Session, error) {
	request := newConfig(options).session
	response, err := c.rpc.CreateSession(ctx, request)
	if err != nil {
		return nil, c.connection.explain(fromRPC(err))
	}
	s := &Session{
		client:     c,
		id:         response.GetSession().GetId(),
		readerDone: make(chan struct{}),
		pending:    map[uint64]chan *ffidpb.StreamResult{},
		callbacks:  map[string]*Callback{},
		types:      map[string]*ffidpb.TypeDescriptor{},
		functions:  map[string]*ffidpb.FunctionDeclaration{},
		typeNames:  map[string]*ffidpb.TypeDescriptor{},
	}
	if err := s.attach(ctx); err != nil {
		_, _ = c.rpc.DeleteSession(context.WithoutCancel(ctx), &ffidpb.DeleteSessionRequest{Session: s.id})
		return nil, err
	}
	return s, nil
}

// attach opens the Connect stream and waits for the daemon to confirm it.
func (s *Session) attach(ctx context.Context) error {
	streamCtx, cancel := context.WithCancel(context.Background())
	stream, err := s.client.rpc.Connect(streamCtx)
	if err != nil {
		cancel()
		return fromRPC(err)
	}
	attach := &ffidpb.ConnectRequest{Kind: &ffidpb.ConnectRequest_Attach{
		Attach: &ffidpb.AttachSession{Session: s.id}}}
	if err := stream.Send(attach); err != nil {
		cancel()
		return fromRPC(err)
	}
	first := make(chan error, 1)
	go func() {
		response, err := stream.Recv()
		if err == nil && response.GetAttached() == nil {
			err = clientError(ReasonInternal, codes.Internal, "the daemon did not confirm the session's stream")
		}
		first <- err
	}()
	select {
	case err := <-first:
		if err != nil {
			cancel()
			return fromRPC(err)
		}
	case <-ctx.Done():
		cancel()
		return fromRPC(ctx.Err())
	}
	s.stream = stream
	s.cancelStream = cancel
	go s.readLoop()
	return nil
}

// ID returns the session id.
func (s *Session) ID() string { return s.id }

// Client returns the connection the session was made on.
func (s *Session) Client() *Client { return s.client }

// Info returns the session as the daemon sees it: its state, limits,
// sandbox layers, restarts and last crash.
func (s *Session) Info(ctx context.Context) (*ffidpb.Session, error) {
	if err := s.unaryAllowed(ctx, "Info"); err != nil {
		return nil, err
	}
	response, err := s.client.rpc.GetSession(ctx, &ffidpb.GetSessionRequest{Session: s.id})
	if err != nil {
		return nil, fromRPC(err)
	}
	return response.GetSession(), nil
}

// Close deletes the session (ending its worker and releasing everything it
// held), closes its stream and, for a session made by Dial, the
// connection. Later requests fail with ErrSessionNotFound.
func (s *Session) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	_, err := s.client.rpc.DeleteSession(context.Background(), &ffidpb.DeleteSessionRequest{Session: s.id})
	err = fromRPC(err)
	if errors.Is(err, ErrSessionNotFound) || errors.Is(err, ErrWorkerCrashed) {
		err = nil
	}
	s.sendMu.Lock()
	_ = s.stream.CloseSend()
	s.sendMu.Unlock()
	s.cancelStream()
	<-s.readerDone
	if s.ownsClient {
		if closeErr := s.client.Close(); err == nil {
			err = closeErr
		}
	}
	return err
}

// check fails once the session is closed.
func (s *Session) check() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return clientError(ReasonSessionNotFound, codes.NotFound, "session %s was closed", s.id)
	}
	return nil
}

// unaryAllowed refuses requests that cannot run inside a callback (they
// would wait for the native call that is running the callback).
func (s *Session) unaryAllowed(ctx context.Context, what string) error {
	if err := s.check(); err != nil {
		return err
	}
	if inv := InvocationFrom(ctx); inv != nil && inv.session == s {
		return clientError(ReasonUnsupported, codes.FailedPrecondition,
			"%s cannot run inside a callback: do it before the call that runs the callback", what)
	}
	return nil
}

// Load loads a shared library by soname ("libm.so.6") or absolute path
// into the session's worker. The daemon's allowlist decides what may load.
func (s *Session) Load(ctx context.Context, name string) (*Library, error) {
	if err := s.unaryAllowed(ctx, "Load"); err != nil {
		return nil, err
	}
	response, err := s.client.rpc.LoadLibrary(ctx, &ffidpb.LoadLibraryRequest{Session: s.id, Name: name})
	if err != nil {
		return nil, fromRPC(err)
	}
	return &Library{session: s, handle: response.GetLibrary(), path: response.GetPath(),
		funcs: map[string]*Function{}}, nil
}

// Cdef declares C types and functions, cffi-style: prototypes, struct,
// union and enum definitions, typedefs. The types are the session's; the
// prototypes can be called by name through any library of the session
// (Library.Func).
func (s *Session) Cdef(ctx context.Context, source string) error {
	if err := s.unaryAllowed(ctx, "Cdef"); err != nil {
		return err
	}
	response, err := s.client.rpc.ParseDeclarations(ctx,
		&ffidpb.ParseDeclarationsRequest{Session: s.id, Source: source})
	if err != nil {
		return fromRPC(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, declaration := range response.GetTypes() {
		s.types[declaration.GetName()] = declaration.GetType()
	}
	for _, function := range response.GetFunctions() {
		s.functions[function.GetName()] = function
	}
	return nil
}

// lookupType is the session's typeTable.
func (s *Session) lookupType(name string) *ffidpb.TypeDescriptor {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := s.types[name]; ok {
		return d
	}
	return s.typeNames[name]
}

// resolveTypeName lays out a C type name ("int[4]", "struct point",
// "unsigned long") over the session's types, for converting values of
// typed memory; cached.
func (s *Session) resolveTypeName(ctx context.Context, name string) (*ffidpb.TypeDescriptor, error) {
	if d := s.lookupType(name); d != nil {
		return d, nil
	}
	if InvocationFrom(ctx) != nil {
		// No unary requests inside a callback: convert without the layout.
		return &ffidpb.TypeDescriptor{Kind: &ffidpb.TypeDescriptor_Named{Named: name}}, nil
	}
	declaration := "extern " + name + " ffid_type_probe;"
	if i := strings.IndexByte(name, '['); i >= 0 {
		declaration = "extern " + name[:i] + " ffid_type_probe" + name[i:] + ";"
	}
	response, err := s.client.rpc.ParseDeclarations(ctx,
		&ffidpb.ParseDeclarationsRequest{Session: s.id, Source: declaration})
	if err != nil {
		return nil, fromRPC(err)
	}
	if len(response.GetVariables()) != 1 {
		return nil, clientError(ReasonDeclarationInvalid, codes.InvalidArgument, "%q is not one C type", name)
	}
	d := response.GetVariables()[0].GetType()
	s.mu.Lock()
	s.typeNames[name] = d
	s.mu.Unlock()
	return d, nil
}

// readLoop receives from the Connect stream: results of stream calls and
// callback invocations.
func (s *Session) readLoop() {
	defer close(s.readerDone)
	for {
		response, err := s.stream.Recv()
		if err != nil {
			s.mu.Lock()
			s.streamErr = fromRPC(err)
			if s.streamErr == nil || errors.Is(s.streamErr, context.Canceled) {
				s.streamErr = clientError(ReasonSessionNotFound, codes.NotFound, "session %s was closed", s.id)
			}
			for tag, ch := range s.pending {
				close(ch)
				delete(s.pending, tag)
			}
			s.mu.Unlock()
			return
		}
		switch kind := response.GetKind().(type) {
		case *ffidpb.ConnectResponse_Result:
			s.mu.Lock()
			ch, ok := s.pending[kind.Result.GetTag()]
			delete(s.pending, kind.Result.GetTag())
			s.mu.Unlock()
			if ok {
				ch <- kind.Result
			}
		case *ffidpb.ConnectResponse_Invocation:
			go s.invoke(kind.Invocation)
		}
	}
}

// send writes one message on the stream.
func (s *Session) send(request *ffidpb.ConnectRequest) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if err := s.stream.Send(request); err != nil {
		return s.streamError(err)
	}
	return nil
}

func (s *Session) streamError(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streamErr != nil {
		return s.streamErr
	}
	return fromRPC(err)
}

// streamCall sends a request on the Connect stream, tagged with the
// invocation that ctx carries (so it runs on the native thread waiting for
// that callback), and waits for its result.
func (s *Session) streamCall(ctx context.Context, call *ffidpb.StreamCall) (*ffidpb.StreamResult, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if inv := InvocationFrom(ctx); inv != nil && inv.session == s {
		call.Invocation = inv.id
	}
	call.Tag = s.nextTag.Add(1)
	ch := make(chan *ffidpb.StreamResult, 1)
	s.mu.Lock()
	if s.streamErr != nil {
		err := s.streamErr
		s.mu.Unlock()
		return nil, err
	}
	s.pending[call.Tag] = ch
	s.mu.Unlock()
	if err := s.send(&ffidpb.ConnectRequest{Kind: &ffidpb.ConnectRequest_Call{Call: call}}); err != nil {
		s.mu.Lock()
		delete(s.pending, call.Tag)
		s.mu.Unlock()
		return nil, err
	}
	select {
	case result, ok := <-ch:
		if !ok {
			return nil, s.streamError(nil)
		}
		if len(result.GetErrorStatus()) > 0 {
			return nil, fromStatusBytes(result.GetErrorStatus())
		}
		return result, nil
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.pending, call.Tag)
		s.mu.Unlock()
		return nil, fromRPC(ctx.Err())
	}
}

// inCallback reports whether ctx carries an invocation of this session:
// requests then travel on the stream.
func (s *Session) inCallback(ctx context.Context) bool {
	inv := InvocationFrom(ctx)
	return inv != nil && inv.session == s
}

// String describes the session for logs.
func (s *Session) String() string { return fmt.Sprintf("ffid.Session(%s)", s.id) }
