package ffid

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// How a client reaches the daemon and proves who it is. Every ffid client
// (Go, C++, Python, Node) takes the same settings and falls back to the same
// environment variables for those not given as options:
//
//	FFID_ADDRESS     "unix:/path" or "host:port"
//	FFID_TOKEN       a bearer token, sent as "authorization: Bearer TOKEN"
//	FFID_TOKEN_FILE  a file holding the token (FFID_TOKEN wins if both are set)
//	FFID_CA          PEM file of the CA certificates that signed the daemon's
//	                 certificate (default: the system's roots)
//	FFID_CERT        PEM file of the client certificate chain (mutual TLS)
//	FFID_KEY         PEM file of its private key
//	FFID_INSECURE    "1" (or "true", "yes"): plaintext TCP
//
// A unix: address is always plaintext; any other uses TLS unless
// WithInsecure (or FFID_INSECURE) says otherwise.
type auth struct {
	token, tokenFile          string
	caFile, certFile, keyFile string
	insecure                  bool
	noEnvironment             bool
	// Set by resolve when WithTransportCredentials chose the transport.
	noTransportEnvironment bool
}

// WithToken sends token as "authorization: Bearer TOKEN" with every request
// (the daemon's --token-file names it). Default: $FFID_TOKEN, else the file
// $FFID_TOKEN_FILE.
func WithToken(token string) Option {
	return func(c *config) { c.auth.token = token }
}

// WithTokenFile is WithToken with the token read from a file (surrounding
// whitespace ignored).
func WithTokenFile(path string) Option {
	return func(c *config) { c.auth.tokenFile = path }
}

// WithTLS checks the daemon's certificate against the CA certificates in
// caFile (PEM); "" means the system's roots. A host:port address uses TLS
// anyway unless WithInsecure is given; this option names the CA. Default:
// $FFID_CA.
func WithTLS(caFile string) Option {
	return func(c *config) {
		c.auth.caFile = caFile
		c.tlsRequested = true
	}
}

// WithClientCertificate presents a client certificate (mutual TLS): the
// daemon's --tls-client-ca must have signed it, and its common name becomes
// the principal "x509:CN". Default: $FFID_CERT and $FFID_KEY.
func WithClientCertificate(certFile, keyFile string) Option {
	return func(c *config) {
		c.auth.certFile = certFile
		c.auth.keyFile = keyFile
	}
}

// WithInsecure connects over plaintext TCP, to a daemon started with
// --insecure. Default: $FFID_INSECURE=1.
func WithInsecure() Option {
	return func(c *config) { c.auth.insecure = true }
}

// WithoutEnvironment ignores FFID_TOKEN, FFID_TOKEN_FILE, FFID_CA,
// FFID_CERT, FFID_KEY and FFID_INSECURE (the address still defaults to
// DefaultAddress()).
func WithoutEnvironment() Option {
	return func(c *config) { c.auth.noEnvironment = true }
}

// connection is what NewClient makes of the options and the environment.
type connection struct {
	address  string
	token    string
	tls      bool
	caFile   string
	certFile string
	creds    credentials.TransportCredentials
}

func (a *auth) env(name string) string {
	if a.noEnvironment {
		return ""
	}
	return os.Getenv(name)
}

func invalidSetting(format string, args ...any) error {
	return clientError(ReasonInvalidRequest, codes.InvalidArgument, format, args...)
}

// resolve applies the environment to what the options left unset and
// checks the combination.
func (c *config) resolve(address string) (*connection, error) {
	a := c.auth
	conn := &connection{address: address}
	if c.creds != nil {
		if a.caFile != "" || a.certFile != "" || a.keyFile != "" || a.insecure || c.tlsRequested {
			return nil, invalidSetting("WithTransportCredentials replaces WithTLS, WithClientCertificate " +
				"and WithInsecure: give one or the other")
		}
		// The caller chose the transport: FFID_CA, FFID_CERT, FFID_KEY and
		// FFID_INSECURE do not apply.
		a.noTransportEnvironment = true
	}
	if a.token != "" && a.tokenFile != "" {
		return nil, invalidSetting("give WithToken or WithTokenFile, not both")
	}
	if a.token == "" && a.tokenFile == "" {
		a.token = a.env("FFID_TOKEN")
		if a.token == "" {
			a.tokenFile = a.env("FFID_TOKEN_FILE")
		}
	}
	if a.tokenFile != "" {
		data, err := os.ReadFile(a.tokenFile)
		if err != nil {
			return nil, invalidSetting("cannot read the token file %q: %v", a.tokenFile, unwrapPathError(err))
		}
		a.token = strings.TrimSpace(string(data))
		if a.token == "" {
			return nil, invalidSetting("the token file %q is empty", a.tokenFile)
		}
	}
	conn.token = strings.TrimSpace(a.token)
	if strings.ContainsAny(conn.token, "\r\n") {
		return nil, invalidSetting("the bearer token holds a line break: it must be one line")
	}

	if a.noTransportEnvironment {
		conn.creds = c.creds
		return conn, nil
	}
	if a.caFile == "" {
		a.caFile = a.env("FFID_CA")
	}
	if a.certFile == "" && a.keyFile == "" {
		a.certFile, a.keyFile = a.env("FFID_CERT"), a.env("FFID_KEY")
	}
	if !a.insecure {
		switch strings.ToLower(a.env("FFID_INSECURE")) {
		case "1", "true", "yes":
			a.insecure = true
		}
	}
	tlsSettings := a.caFile != "" || a.certFile != "" || a.keyFile != "" || c.tlsRequested
	if strings.HasPrefix(address, "unix:") {
		if tlsSettings {
			return nil, invalidSetting("TLS settings (WithTLS, WithClientCertificate; FFID_CA, FFID_CERT, "+
				"FFID_KEY) apply to TCP addresses, but %s is the daemon's unix socket, which is "+
				"plaintext: drop them or give a host:port address", address)
		}
		conn.creds = insecure.NewCredentials()
		return conn, nil
	}
	if a.insecure {
		if tlsSettings {
			return nil, invalidSetting("WithInsecure (plaintext TCP, FFID_INSECURE) contradicts the TLS " +
				"settings given (WithTLS, WithClientCertificate; FFID_CA, FFID_CERT, FFID_KEY): give " +
				"one or the other")
		}
		conn.creds = insecure.NewCredentials()
		return conn, nil
	}
	if (a.certFile == "") != (a.keyFile == "") {
		return nil, invalidSetting("mutual TLS needs both the client certificate and its key " +
			"(WithClientCertificate, or FFID_CERT and FFID_KEY); only one was given")
	}
	config := &tls.Config{MinVersion: tls.VersionTLS12}
	if a.caFile != "" {
		pem, err := os.ReadFile(a.caFile)
		if err != nil {
			return nil, invalidSetting("cannot read the CA file %q: %v", a.caFile, unwrapPathError(err))
		}
		config.RootCAs = x509.NewCertPool()
		if !config.RootCAs.AppendCertsFromPEM(pem) {
			return nil, invalidSetting("the CA file %q holds no PEM certificate", a.caFile)
		}
	}
	if a.certFile != "" {
		pair, err := tls.LoadX509KeyPair(a.certFile, a.keyFile)
		if err != nil {
			return nil, invalidSetting("cannot load the client certificate %q and key %q: %v",
				a.certFile, a.keyFile, unwrapPathError(err))
		}
		config.Certificates = []tls.Certificate{pair}
	}
	conn.tls, conn.caFile, conn.certFile = true, a.caFile, a.certFile
	conn.creds = credentials.NewTLS(config)
	return conn, nil
}

func unwrapPathError(err error) error {
	if pathErr, ok := err.(*os.PathError); ok {
		return pathErr.Err
	}
	return err
}

// dialOptions are the connection's gRPC options.
func (conn *connection) dialOptions() []grpc.DialOption {
	options := []grpc.DialOption{grpc.WithTransportCredentials(conn.creds)}
	if conn.token != "" {
		options = append(options, grpc.WithPerRPCCredentials(bearerToken(conn.token)))
	}
	return options
}

// bearerToken sends "authorization: Bearer TOKEN" with every RPC, on any
// transport (the daemon's unix socket is plaintext but local).
type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

func (bearerToken) RequireTransportSecurity() bool { return false }

// explain adds what to check to an UNAVAILABLE error of this connection.
func (conn *connection) explain(err error) error {
	e, ok := err.(*Error)
	if !ok || e.Reason != ReasonUnavailable || e.Metadata != nil {
		return err
	}
	hint := "is the daemon running? (pass an address or set FFID_ADDRESS)"
	switch {
	case !conn.tls && !strings.HasPrefix(conn.address, "unix:"):
		hint += "; plaintext TCP reaches only a daemon started with --insecure: for one with " +
			"--tls-cert, drop WithInsecure (FFID_INSECURE) and give its CA (WithTLS, FFID_CA)"
	case conn.tls:
		ca := "that the daemon's certificate is signed by a CA the system trusts, or give its CA " +
			"(WithTLS, FFID_CA)"
		if conn.caFile != "" {
			ca = fmt.Sprintf("that the CA file %q (WithTLS, FFID_CA) signed the daemon's certificate", conn.caFile)
		}
		cert := "a daemon with --tls-client-ca (mutual TLS) also needs a client certificate and key " +
			"(WithClientCertificate, FFID_CERT/FFID_KEY); "
		if conn.certFile != "" {
			cert = fmt.Sprintf("that the daemon's --tls-client-ca signed the client certificate %q; ", conn.certFile)
		}
		hint = "is the daemon running with TLS there? If the TLS handshake failed, check " + ca +
			" and that the certificate names the host you connect to; " + cert +
			"a daemon started with --insecure needs WithInsecure (FFID_INSECURE=1)"
	}
	explained := *e
	explained.Message = fmt.Sprintf("cannot connect to ffid at %s (%s): %s", conn.address, e.Message, hint)
	return &explained
}
