// Package ffid is the Go client of ffid, an out-of-process foreign function
// interface: the ffid daemon loads native C libraries into a sandboxed
// worker process per session and calls their functions through libffi, so
// a crash in native code fails a call instead of killing this process.
//
//	s, err := ffid.Dial(ctx, "")          // $FFID_ADDRESS, else the default socket
//	if err != nil { ... }
//	defer s.Close()
//	libm, err := s.Load(ctx, "libm.so.6")
//	err = libm.Cdef(ctx, "double cos(double);")
//	v, err := libm.Func("cos").Call(ctx, 0.5) // float64(0.8775825618903728)
//
// Errors are *Error values with a Reason; test them with errors.Is and the
// sentinels (ErrSymbolNotFound, ErrWorkerCrashed, ...). A context's
// deadline is the call's deadline. See clients/go/README.md.
//
// The generated gRPC code is in the ffidpb package.
package ffid
