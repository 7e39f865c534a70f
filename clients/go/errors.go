package ffid

import (
	"context"
	"errors"
	"fmt"

	"github.com/ffid/ffid/clients/go/ffidpb"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Reason says why a request failed: the server's ErrorReason name without
// its prefix (see proto/ffid/v1/errors.proto), or ReasonUnavailable when the
// daemon could not be reached.
type Reason string

// The reasons a request can fail for.
const (
	ReasonLibraryNotFound    Reason = "LIBRARY_NOT_FOUND"
	ReasonLibraryNotAllowed  Reason = "LIBRARY_NOT_ALLOWED"
	ReasonLibraryLoadFailed  Reason = "LIBRARY_LOAD_FAILED"
	ReasonSymbolNotFound     Reason = "SYMBOL_NOT_FOUND"
	ReasonDeclarationInvalid Reason = "DECLARATION_INVALID"
	ReasonTypeMismatch       Reason = "TYPE_MISMATCH"
	ReasonValueOutOfRange    Reason = "VALUE_OUT_OF_RANGE"
	ReasonArgumentCount      Reason = "ARGUMENT_COUNT"
	ReasonHandleInvalid      Reason = "HANDLE_INVALID"
	ReasonOutOfBounds        Reason = "OUT_OF_BOUNDS"
	ReasonWorkerCrashed      Reason = "WORKER_CRASHED"
	ReasonSessionNotFound    Reason = "SESSION_NOT_FOUND"
	ReasonDeadlineExceeded   Reason = "DEADLINE_EXCEEDED"
	ReasonResourceLimit      Reason = "RESOURCE_LIMIT"
	ReasonSandboxViolation   Reason = "SANDBOX_VIOLATION"
	ReasonCallbackFailed     Reason = "CALLBACK_FAILED"
	ReasonInvalidRequest     Reason = "INVALID_REQUEST"
	ReasonUnsupported        Reason = "UNSUPPORTED"
	ReasonWorkerStartFailed  Reason = "WORKER_START_FAILED"
	ReasonBadAddress         Reason = "BAD_ADDRESS"
	ReasonInternal           Reason = "INTERNAL"
	ReasonMisalignedAccess   Reason = "MISALIGNED_ACCESS"
	// Access control: no identity where one is required, or a bearer token
	// the daemon does not know (codes.Unauthenticated).
	ReasonUnauthenticated Reason = "UNAUTHENTICATED"
	// The principal's policy refuses it everything.
	ReasonPrincipalDenied Reason = "PRINCIPAL_DENIED"
	// The principal's policy does not allow the symbol.
	ReasonSymbolNotAllowed Reason = "SYMBOL_NOT_ALLOWED"
	// The library's SHA-256 differs from its pin.
	ReasonLibraryPinMismatch Reason = "LIBRARY_PIN_MISMATCH"
	// The principal has as many sessions as its policy allows.
	ReasonSessionQuota Reason = "SESSION_QUOTA"
	// The principal makes more calls per second than its policy allows.
	ReasonRateLimited Reason = "RATE_LIMITED"
	// ReasonUnavailable: the daemon could not be reached (no server
	// reason; gRPC's UNAVAILABLE).
	ReasonUnavailable Reason = "UNAVAILABLE"
)

// Error is every error this package returns for a failed request. Test for
// a reason with errors.Is and a sentinel (errors.Is(err,
// ffid.ErrSymbolNotFound)); get the details with errors.As:
//
//	var e *ffid.Error
//	if errors.As(err, &e) && e.Crash != nil {
//		fmt.Println(e.Crash.SignalName, e.Crash.Function)
//	}
type Error struct {
	// Reason says why the request failed.
	Reason Reason
	// Code is the gRPC status code.
	Code codes.Code
	// Message is the server's message, for a person.
	Message string
	// Metadata is the ErrorInfo's metadata (e.g. "batch_step").
	Metadata map[string]string
	// Crash is the worker's crash report, for WORKER_CRASHED,
	// SANDBOX_VIOLATION, RESOURCE_LIMIT and DEADLINE_EXCEEDED when the
	// worker died.
	Crash *ffidpb.CrashReport
	// Cause is the error of a failed callback (CALLBACK_FAILED raised by this
	// client's own callback), else nil.
	Cause error
}

// Error returns "ffid: REASON: message".
func (e *Error) Error() string {
	if e.Reason == "" {
		return "ffid: " + e.Message
	}
	return fmt.Sprintf("ffid: %s: %s", e.Reason, e.Message)
}

// Is reports whether target is an *Error with the same Reason (the
// sentinels ErrSymbolNotFound, ... have only a Reason). A DEADLINE_EXCEEDED
// error is also context.DeadlineExceeded.
func (e *Error) Is(target error) bool {
	if t, ok := target.(*Error); ok {
		return t.Reason == e.Reason
	}
	return e.Reason == ReasonDeadlineExceeded && target == context.DeadlineExceeded
}

// Unwrap returns the callback's error of a CALLBACK_FAILED error, if any.
func (e *Error) Unwrap() error { return e.Cause }

// The sentinels, one per Reason, for errors.Is.
var (
	ErrLibraryNotFound    = &Error{Reason: ReasonLibraryNotFound}
	ErrLibraryNotAllowed  = &Error{Reason: ReasonLibraryNotAllowed}
	ErrLibraryLoadFailed  = &Error{Reason: ReasonLibraryLoadFailed}
	ErrSymbolNotFound     = &Error{Reason: ReasonSymbolNotFound}
	ErrDeclarationInvalid = &Error{Reason: ReasonDeclarationInvalid}
	ErrTypeMismatch       = &Error{Reason: ReasonTypeMismatch}
	ErrValueOutOfRange    = &Error{Reason: ReasonValueOutOfRange}
	ErrArgumentCount      = &Error{Reason: ReasonArgumentCount}
	ErrHandleInvalid      = &Error{Reason: ReasonHandleInvalid}
	ErrOutOfBounds        = &Error{Reason: ReasonOutOfBounds}
	ErrWorkerCrashed      = &Error{Reason: ReasonWorkerCrashed}
	ErrSessionNotFound    = &Error{Reason: ReasonSessionNotFound}
	ErrDeadlineExceeded   = &Error{Reason: ReasonDeadlineExceeded}
	ErrResourceLimit      = &Error{Reason: ReasonResourceLimit}
	ErrSandboxViolation   = &Error{Reason: ReasonSandboxViolation}
	ErrCallbackFailed     = &Error{Reason: ReasonCallbackFailed}
	ErrInvalidRequest     = &Error{Reason: ReasonInvalidRequest}
	ErrUnsupported        = &Error{Reason: ReasonUnsupported}
	ErrWorkerStartFailed  = &Error{Reason: ReasonWorkerStartFailed}
	ErrBadAddress         = &Error{Reason: ReasonBadAddress}
	ErrInternal           = &Error{Reason: ReasonInternal}
	ErrMisalignedAccess   = &Error{Reason: ReasonMisalignedAccess}
	ErrUnavailable        = &Error{Reason: ReasonUnavailable}
	ErrUnauthenticated    = &Error{Reason: ReasonUnauthenticated}
	ErrPrincipalDenied    = &Error{Reason: ReasonPrincipalDenied}
	ErrSymbolNotAllowed   = &Error{Reason: ReasonSymbolNotAllowed}
	ErrLibraryPinMismatch = &Error{Reason: ReasonLibraryPinMismatch}
	ErrSessionQuota       = &Error{Reason: ReasonSessionQuota}
	ErrRateLimited        = &Error{Reason: ReasonRateLimited}
)

// ReasonOf returns the Reason of err if it is (or wraps) an *Error, else "".
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// clientError is an error detected by this client before anything was sent.
func clientError(reason Reason, code codes.Code, format string, args ...any) *Error {
	return &Error{Reason: reason, Code: code, Message: fmt.Sprintf(format, args...)}
}

// fromStatus turns a gRPC status into an *Error: the ErrorInfo's reason and
// metadata, the crash report. Deadlines and cancellations the client's
// gRPC enforced carry no details and are mapped from their codes.
func fromStatus(st *status.Status) error {
	if st == nil || st.Code() == codes.OK {
		return nil
	}
	e := &Error{Code: st.Code(), Message: st.Message()}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			e.Reason = Reason(d.GetReason())
			e.Metadata = d.GetMetadata()
		case *ffidpb.CrashReport:
			e.Crash = d
		}
	}
	if e.Reason == "" {
		switch st.Code() {
		case codes.DeadlineExceeded:
			e.Reason = ReasonDeadlineExceeded
		case codes.Unavailable:
			e.Reason = ReasonUnavailable
		case codes.Canceled:
			return context.Canceled
		}
	}
	return e
}

// fromRPC converts an error returned by a generated stub.
func fromRPC(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return context.Canceled
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	return fromStatus(st)
}

// fromStatusBytes converts the serialized google.rpc.Status of a failed
// StreamResult.
func fromStatusBytes(data []byte) error {
	var s spb.Status
	if err := proto.Unmarshal(data, &s); err != nil {
		return &Error{Reason: ReasonInternal, Code: codes.Internal,
			Message: "cannot decode a stream result's status: " + err.Error()}
	}
	return fromStatus(status.FromProto(&s))
}
