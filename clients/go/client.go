package ffid

import (
	"context"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/ffid/ffid/clients/go/ffidpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"
)

// DefaultAddress is the daemon's address when none is given: $FFID_ADDRESS
// if set, else unix:$XDG_RUNTIME_DIR/ffid/ffid.sock if XDG_RUNTIME_DIR is
// set, else unix:/tmp/ffid-$UID/ffid.sock.
func DefaultAddress() string {
	if address := os.Getenv("FFID_ADDRESS"); address != "" {
		return address
	}
	if runtime := os.Getenv("XDG_RUNTIME_DIR"); runtime != "" {
		return "unix:" + runtime + "/ffid/ffid.sock"
	}
	return fmt.Sprintf("unix:/tmp/ffid-%d/ffid.sock", os.Getuid())
}

// Client is a connection to one ffid daemon, on which sessions are made.
// It is safe for concurrent use.
type Client struct {
	conn       *grpc.ClientConn
	rpc        ffidpb.FfiClient
	connection *connection
}

// Option configures Dial, NewClient or Client.NewSession. Connection
// options (WithToken, WithTokenFile, WithTLS, WithClientCertificate,
// WithInsecure, WithoutEnvironment, WithTransportCredentials,
// WithDialOptions) matter to Dial and NewClient, session options (the
// others) to Dial and NewSession; each call ignores the rest.
type Option func(*config)

type config struct {
	creds        credentials.TransportCredentials
	auth         auth
	tlsRequested bool
	dialOptions  []grpc.DialOption
	session      *ffidpb.CreateSessionRequest
}

func newConfig(options []Option) *config {
	c := &config{session: &ffidpb.CreateSessionRequest{}}
	for _, option := range options {
		option(c)
	}
	return c
}

// WithTransportCredentials sets the connection's transport credentials
// outright (a custom tls.Config, say), instead of WithTLS,
// WithClientCertificate or WithInsecure and their environment variables.
// The default: plaintext on the daemon's unix socket, TLS on TCP.
func WithTransportCredentials(creds credentials.TransportCredentials) Option {
	return func(c *config) { c.creds = creds }
}

// WithDialOptions adds gRPC dial options (interceptors, per-RPC
// credentials, ...).
func WithDialOptions(options ...grpc.DialOption) Option {
	return func(c *config) { c.dialOptions = append(c.dialOptions, options...) }
}

// NewClient connects to the daemon at address ("unix:/path/to/socket" or
// "host:port"; "" means DefaultAddress()), with TLS on TCP unless
// WithInsecure, and the token and certificates the options (or the
// FFID_* environment variables, see WithToken) give. The connection is
// made lazily; the first request fails with ErrUnavailable, saying what to
// check, if the daemon cannot be reached or the TLS handshake fails.
// Contradictory or unreadable settings fail here with ErrInvalidRequest.
// Close the client when done.
func NewClient(address string, options ...Option) (*Client, error) {
	if address == "" {
		address = DefaultAddress()
	}
	config := newConfig(options)
	connection, err := config.resolve(address)
	if err != nil {
		return nil, err
	}
	// A Read of a whole block (length 0) is one message of any size up to
	// the daemon's 1 GiB: gRPC's default limit of 4 MiB would refuse it.
	dialOptions := append(connection.dialOptions(),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32)))
	dialOptions = append(dialOptions, config.dialOptions...)
	conn, err := grpc.NewClient(address, dialOptions...)
	if err != nil {
		return nil, clientError(ReasonUnavailable, codes.Unavailable, "cannot connect to %s: %v", address, err)
	}
	return &Client{conn: conn, rpc: ffidpb.NewFfiClient(conn), connection: connection}, nil
}

// Close closes the connection. Sessions made on it end with it (the daemon
// deletes a session when its Connect stream closes).
func (c *Client) Close() error { return c.conn.Close() }

// RPC returns the generated gRPC stub, for RPCs this package does not wrap
// (Batch, ResolveVariable, Adopt, ...).
func (c *Client) RPC() ffidpb.FfiClient { return c.rpc }

// ServerInfo describes the daemon: its sandbox layers and limits, and who
// it takes this client to be (Principal: "token:NAME", "x509:CN", ...).
func (c *Client) ServerInfo(ctx context.Context) (*ffidpb.GetServerInfoResponse, error) {
	response, err := c.rpc.GetServerInfo(ctx, &ffidpb.GetServerInfoRequest{})
	return response, c.connection.explain(fromRPC(err))
}

// RestartPolicy says what happens to a session when its worker dies.
type RestartPolicy int

const (
	// RestartNever: the session is dead; every later request fails with
	// ErrWorkerCrashed. The default.
	RestartNever RestartPolicy = iota
	// Restart: a new worker is started at once, with the session's libraries
	// and functions restored under the same handles (memory is lost).
	Restart
)

// Limits are a session's worker limits; zero fields take the daemon's
// defaults, and a value above the daemon's maximum fails with
// ErrResourceLimit.
type Limits struct {
	// AddressSpaceBytes is RLIMIT_AS.
	AddressSpaceBytes uint64
	// CPUSeconds is RLIMIT_CPU over the worker's life.
	CPUSeconds uint64
	// OpenFiles is RLIMIT_NOFILE.
	OpenFiles uint64
	// FileSizeBytes is RLIMIT_FSIZE.
	FileSizeBytes uint64
	// MaxCallDuration caps every call, whatever its context's deadline.
	MaxCallDuration time.Duration
}

// WithRestartPolicy sets what happens when the session's worker dies.
func WithRestartPolicy(policy RestartPolicy) Option {
	return func(c *config) {
		r := c.session
		r.RestartPolicy = ffidpb.RestartPolicy_RESTART_POLICY_NEVER
		if policy == Restart {
			r.RestartPolicy = ffidpb.RestartPolicy_RESTART_POLICY_RESTART
		}
	}
}

// WithLimits sets the worker's limits.
func WithLimits(limits Limits) Option {
	return func(c *config) {
		r := c.session
		r.Limits = &ffidpb.ResourceLimits{
			AddressSpaceBytes: limits.AddressSpaceBytes,
			CpuSeconds:        limits.CPUSeconds,
			OpenFiles:         limits.OpenFiles,
			FileSizeBytes:     limits.FileSizeBytes,
		}
		if limits.MaxCallDuration > 0 {
			r.Limits.MaxCallDuration = durationpb.New(limits.MaxCallDuration)
		}
	}
}

// WithIdleTimeout sets how long the daemon keeps the session without
// requests once this client is gone without closing it.
func WithIdleTimeout(timeout time.Duration) Option {
	return func(c *config) { c.session.IdleTimeout = durationpb.New(timeout) }
}

// WithNetwork lets the worker use the network (only if the daemon runs with
// --allow-network).
func WithNetwork() Option {
	return func(c *config) {
		r := c.session
		r.Sandbox = &ffidpb.SandboxPolicy{AllowNetwork: true}
	}
}

// Dial connects to the daemon at address ("" means DefaultAddress()) and
// starts a session there. The session owns the connection: Close ends
// both.
func Dial(ctx context.Context, address string, options ...Option) (*Session, error) {
	client, err := NewClient(address, options...)
	if err != nil {
		return nil, err
	}
	session, err := client.NewSession(ctx, options...)
	if err != nil {
		client.Close()
		return nil, err
	}
	session.ownsClient = true
	return session, nil
}
