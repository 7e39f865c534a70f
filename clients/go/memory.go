package ffid

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/ffid/ffid/clients/go/ffidpb"
	"google.golang.org/grpc/codes"
)

// Pointer is an address in a session's worker: an offset into a memory
// handle (owned memory, or a borrowed pointer a call returned), or a raw
// address. Reading or writing a borrowed pointer needs an explicit length;
// a bad address fails with ErrBadAddress, it crashes nothing. The zero
// Pointer is NULL.
type Pointer struct {
	session *Session
	handle  string
	offset  uint64
	address uint64
}

func pointerFrom(s *Session, p *ffidpb.PointerValue) Pointer {
	return Pointer{session: s, handle: p.GetHandle(), offset: p.GetOffset(), address: p.GetAddress()}
}

func (p Pointer) proto() *ffidpb.PointerValue {
	if p.handle != "" {
		return &ffidpb.PointerValue{Handle: p.handle, Offset: p.offset}
	}
	return &ffidpb.PointerValue{Address: p.address + p.offset}
}

// Address returns the address in the worker (informational; 0 for NULL).
func (p Pointer) Address() uint64 { return p.address + p.offset }

// IsNull reports whether the pointer is NULL.
func (p Pointer) IsNull() bool { return p.handle == "" && p.Address() == 0 }

// Add returns the pointer n bytes further.
func (p Pointer) Add(n uint64) Pointer {
	p.offset += n
	return p
}

// String describes the pointer.
func (p Pointer) String() string {
	if p.handle != "" {
		return fmt.Sprintf("%s+%d (0x%x)", p.handle, p.offset, p.Address())
	}
	return fmt.Sprintf("0x%x", p.Address())
}

func (p Pointer) usable() error {
	if p.session == nil {
		return clientError(ReasonInvalidRequest, codes.InvalidArgument,
			"the pointer belongs to no session (a NULL or zero Pointer)")
	}
	return nil
}

// Reads and writes longer than bulkPiece go as several RPCs of that size,
// as the C++ and Python clients send them: one message of many MiB costs
// gRPC far more per byte than several of 1 MiB. A read of bulkReadLimit
// bytes or more is refused by the daemon whatever its pieces: it goes as
// one RPC, which says so.
const (
	bulkPiece     = 1 << 20
	bulkReadLimit = 1 << 30
)

// namePiece returns err (of the piece at byte start of a transfer of total
// bytes, split) with the piece named in front of its message.
func namePiece(err error, start, total int) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	named := *e
	named.Message = fmt.Sprintf("piece %d of %d (bytes %d..%d of %d): %s", start/bulkPiece+1,
		(total+bulkPiece-1)/bulkPiece, start, min(start+bulkPiece, total)-1, total, e.Message)
	return &named
}

// Read reads n bytes at the pointer (n = 0 reads owned memory to its end).
// More than 1 MiB comes on one ReadStream (a failure says which bytes had
// been sent); from a daemon without it, in 1 MiB pieces, one after the
// other: a failure stops it and names the piece.
func (p Pointer) Read(ctx context.Context, n int) ([]byte, error) {
	if err := p.usable(); err != nil {
		return nil, err
	}
	if p.session.useStreams(ctx, n) {
		data, err := p.session.readStream(ctx, p, n)
		if !streamsUnimplemented(err) {
			return data, err
		}
		p.session.piecesOnly.Store(true)
	}
	if n <= bulkPiece || n >= bulkReadLimit {
		response, err := p.session.read(ctx, &ffidpb.ReadRequest{Pointer: p.proto(), Length: uint64(n)})
		if err != nil {
			return nil, err
		}
		return response.GetData(), nil
	}
	data := make([]byte, 0, n)
	for start := 0; start < n; start += bulkPiece {
		response, err := p.session.read(ctx, &ffidpb.ReadRequest{Pointer: p.Add(uint64(start)).proto(),
			Length: uint64(min(bulkPiece, n-start))})
		if err != nil {
			return nil, namePiece(err, start, n)
		}
		data = append(data, response.GetData()...)
	}
	return data, nil
}

// Write writes data at the pointer. More than 1 MiB goes on one
// WriteStream: a write past the end of owned memory writes nothing, and a
// failure midway says which bytes were written. To a daemon without it,
// in 1 MiB pieces: the last piece first (so a write past the end writes
// nothing), then the others in order; a failure stops it (pieces written
// stay) and names the piece.
func (p Pointer) Write(ctx context.Context, data []byte) error {
	if err := p.usable(); err != nil {
		return err
	}
	if p.session.useStreams(ctx, len(data)) {
		err := p.session.writeStream(ctx, p, data)
		if !streamsUnimplemented(err) {
			return err
		}
		p.session.piecesOnly.Store(true)
	}
	if len(data) <= bulkPiece {
		return p.session.write(ctx, &ffidpb.WriteRequest{Pointer: p.proto(), Data: data})
	}
	last := (len(data) - 1) / bulkPiece * bulkPiece
	starts := []int{last}
	for start := 0; start < last; start += bulkPiece {
		starts = append(starts, start)
	}
	for _, start := range starts {
		end := min(start+bulkPiece, len(data))
		err := p.session.write(ctx, &ffidpb.WriteRequest{Pointer: p.Add(uint64(start)).proto(), Data: data[start:end]})
		if err != nil {
			return namePiece(err, start, len(data))
		}
	}
	return nil
}

// ReadValue reads one value of the C type cType ("int", "struct point",
// "double[3]") at the pointer, which must be aligned for it
// (ErrMisalignedAccess otherwise). Values are as Function.Call returns
// them.
func (p Pointer) ReadValue(ctx context.Context, cType string) (any, error) {
	if err := p.usable(); err != nil {
		return nil, err
	}
	response, err := p.session.read(ctx, &ffidpb.ReadRequest{Pointer: p.proto(),
		Type: &ffidpb.TypeDescriptor{Kind: &ffidpb.TypeDescriptor_Named{Named: cType}}})
	if err != nil {
		return nil, err
	}
	return fromValue(response.GetValue(), p.session), nil
}

// WriteValue writes value as the C type cType at the pointer.
func (p Pointer) WriteValue(ctx context.Context, cType string, value any) error {
	if err := p.usable(); err != nil {
		return err
	}
	d, err := p.session.resolveTypeName(ctx, cType)
	if err != nil {
		return err
	}
	v, err := toValue(value, d, p.session.lookupType, cType)
	if err != nil {
		return err
	}
	return p.session.write(ctx, &ffidpb.WriteRequest{Pointer: p.proto(),
		Type: &ffidpb.TypeDescriptor{Kind: &ffidpb.TypeDescriptor_Named{Named: cType}}, Value: v})
}

// Memory is native memory owned by the session: zero-filled at first,
// bounds-checked on every access (ErrOutOfBounds), released by Free or at
// the session's end. Pass it (or its Pointer, or Pointer().Add(n)) where
// a pointer is expected.
type Memory struct {
	Pointer
	size uint64
}

// Size returns the size in bytes; 0 when unknown (a variable, an adopted
// pointer of unknown size).
func (m *Memory) Size() uint64 { return m.size }

// Bytes reads the whole block.
func (m *Memory) Bytes(ctx context.Context) ([]byte, error) { return m.Read(ctx, 0) }

// Value reads the block as one value of cType (ReadValue at its start).
func (m *Memory) Value(ctx context.Context, cType string) (any, error) {
	return m.ReadValue(ctx, cType)
}

// Free releases the memory. Using it afterwards fails with
// ErrHandleInvalid.
func (m *Memory) Free(ctx context.Context) error {
	s := m.session
	request := &ffidpb.FreeRequest{Session: s.id, Memory: m.handle}
	if s.inCallback(ctx) {
		_, err := s.streamCall(ctx, &ffidpb.StreamCall{Request: &ffidpb.StreamCall_Free{Free: request}})
		return err
	}
	if err := s.check(); err != nil {
		return err
	}
	_, err := s.client.rpc.Free(ctx, request)
	return fromRPC(err)
}

// Alloc allocates size bytes of zero-filled native memory.
func (s *Session) Alloc(ctx context.Context, size uint64) (*Memory, error) {
	return s.allocate(ctx, &ffidpb.AllocateRequest{Session: s.id, Size: size})
}

// New allocates memory for a value of the C type cType ("struct point",
// "int[4]") and initializes it to value (nil: zero). With count > 1 (an
// optional last argument) it allocates that many elements.
func (s *Session) New(ctx context.Context, cType string, value any, count ...uint64) (*Memory, error) {
	request := &ffidpb.AllocateRequest{Session: s.id,
		Type: &ffidpb.TypeDescriptor{Kind: &ffidpb.TypeDescriptor_Named{Named: cType}}}
	if len(count) > 0 {
		request.Size = count[0]
	}
	if value != nil {
		d, err := s.resolveTypeName(ctx, cType)
		if err != nil {
			return nil, err
		}
		v, err := toValue(value, d, s.lookupType, cType)
		if err != nil {
			return nil, err
		}
		request.InitialValue = v
	}
	return s.allocate(ctx, request)
}

func (s *Session) allocate(ctx context.Context, request *ffidpb.AllocateRequest) (*Memory, error) {
	var response *ffidpb.AllocateResponse
	if s.inCallback(ctx) {
		result, err := s.streamCall(ctx, &ffidpb.StreamCall{Request: &ffidpb.StreamCall_Allocate{Allocate: request}})
		if err != nil {
			return nil, err
		}
		response = result.GetAllocate()
	} else {
		if err := s.check(); err != nil {
			return nil, err
		}
		var err error
		response, err = s.client.rpc.Allocate(ctx, request)
		if err != nil {
			return nil, fromRPC(err)
		}
	}
	return &Memory{Pointer: Pointer{session: s, handle: response.GetMemory(), address: response.GetAddress()},
		size: response.GetSize()}, nil
}

// useStreams reports whether a transfer of n bytes goes on WriteStream /
// ReadStream: more than one piece, not inside a callback (where reads and
// writes travel on the Connect stream), to a daemon that has them.
func (s *Session) useStreams(ctx context.Context, n int) bool {
	return n > bulkPiece && !s.piecesOnly.Load() && !s.inCallback(ctx)
}

// streamsUnimplemented reports whether err is gRPC's own UNIMPLEMENTED (no
// ffid reason): a daemon older than WriteStream and ReadStream.
func streamsUnimplemented(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == codes.Unimplemented && e.Reason == ""
}

// readStream reads n bytes at p on one ReadStream, in 1 MiB messages.
func (s *Session) readStream(ctx context.Context, p Pointer, n int) ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := s.client.rpc.ReadStream(ctx, &ffidpb.ReadStreamRequest{
		Session: s.id, Pointer: p.proto(), Length: uint64(n), PieceBytes: bulkPiece})
	if err != nil {
		return nil, fromRPC(err)
	}
	data := make([]byte, 0, n)
	for {
		piece, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fromRPC(err)
		}
		if len(data)+len(piece.GetData()) > n {
			break
		}
		data = append(data, piece.GetData()...)
	}
	if len(data) != n {
		return nil, clientError(ReasonInternal, codes.Internal,
			"the daemon's ReadStream sent other than the %d bytes asked for", n)
	}
	return data, nil
}

// writeStream writes data at p on one WriteStream, in 1 MiB messages.
func (s *Session) writeStream(ctx context.Context, p Pointer, data []byte) error {
	if err := s.check(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := s.client.rpc.WriteStream(ctx)
	if err != nil {
		return fromRPC(err)
	}
	for start := 0; start < len(data); start += bulkPiece {
		request := &ffidpb.WriteStreamRequest{Data: data[start:min(start+bulkPiece, len(data))]}
		if start == 0 {
			request.Session, request.Pointer, request.Length = s.id, p.proto(), uint64(len(data))
		}
		if err := stream.Send(request); err == io.EOF {
			break // the daemon ended the stream: CloseAndRecv says why
		} else if err != nil {
			return fromRPC(err)
		}
	}
	_, err = stream.CloseAndRecv()
	return fromRPC(err)
}

func (s *Session) read(ctx context.Context, request *ffidpb.ReadRequest) (*ffidpb.ReadResponse, error) {
	request.Session = s.id
	if s.inCallback(ctx) {
		result, err := s.streamCall(ctx, &ffidpb.StreamCall{Request: &ffidpb.StreamCall_Read{Read: request}})
		if err != nil {
			return nil, err
		}
		return result.GetRead(), nil
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	response, err := s.client.rpc.Read(ctx, request)
	return response, fromRPC(err)
}

func (s *Session) write(ctx context.Context, request *ffidpb.WriteRequest) error {
	request.Session = s.id
	if s.inCallback(ctx) {
		_, err := s.streamCall(ctx, &ffidpb.StreamCall{Request: &ffidpb.StreamCall_Write{Write: request}})
		return err
	}
	if err := s.check(); err != nil {
		return err
	}
	_, err := s.client.rpc.Write(ctx, request)
	return fromRPC(err)
}

// Adopt makes the session own a pointer that native code returned: it is
// released with destructor ("" means free), looked up in library (nil:
// the global scope), on Free or at the session's end. size, if not 0,
// bounds-checks later reads and writes.
func (s *Session) Adopt(ctx context.Context, p Pointer, destructor string, library *Library,
	size uint64) (*Memory, error) {
	if err := s.unaryAllowed(ctx, "Adopt"); err != nil {
		return nil, err
	}
	request := &ffidpb.AdoptRequest{Session: s.id, Pointer: p.proto(), Destructor: destructor, Size: size}
	if library != nil {
		request.Library = library.handle
	}
	response, err := s.client.rpc.Adopt(ctx, request)
	if err != nil {
		return nil, fromRPC(err)
	}
	return &Memory{Pointer: Pointer{session: s, handle: response.GetMemory(), address: response.GetAddress()},
		size: size}, nil
}
