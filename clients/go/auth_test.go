package ffid_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	ffid "github.com/ffid/ffid/clients/go"
)

// Authenticating to real daemons: bearer tokens on the unix socket, TLS and
// mutual TLS on TCP with certificates made by tests/testing/make_test_pki.sh,
// plaintext TCP to an --insecure daemon, the FFID_* environment variables,
// and what a wrong setting says.

var authEnvironment = []string{"FFID_ADDRESS", "FFID_TOKEN", "FFID_TOKEN_FILE", "FFID_CA", "FFID_CERT",
	"FFID_KEY", "FFID_INSECURE"}

var (
	pkiOnce sync.Once
	pkiDir  string
	pkiErr  error
)

// pki makes the certificates and token file once for every test.
func pki(t *testing.T) string {
	t.Helper()
	pkiOnce.Do(func() {
		pkiDir, pkiErr = os.MkdirTemp("", "ffid-go-pki-")
		if pkiErr != nil {
			return
		}
		out, err := exec.Command("bash", "../../tests/testing/make_test_pki.sh", pkiDir).CombinedOutput()
		if err != nil {
			var exit *exec.ExitError
			if errors.As(err, &exit) && exit.ExitCode() == 77 {
				pkiErr = errSkip
				return
			}
			pkiErr = fmt.Errorf("make_test_pki.sh: %v\n%s", err, out)
		}
	})
	if errors.Is(pkiErr, errSkip) {
		t.Skip("openssl is not installed")
	}
	if pkiErr != nil {
		t.Fatal(pkiErr)
	}
	return pkiDir
}

var errSkip = errors.New("skip")

// cleanEnvironment unsets every FFID_* setting for the test.
func cleanEnvironment(t *testing.T) {
	for _, name := range authEnvironment {
		t.Setenv(name, "")
		os.Unsetenv(name)
	}
}

// authDaemon starts a daemon with the test token file and flags, stopped
// when the test ends.
func authDaemon(t *testing.T, listen string, flags ...string) *daemon {
	t.Helper()
	dir := pki(t)
	cleanEnvironment(t)
	d, err := startDaemon(listen, append([]string{"--token-file", filepath.Join(dir, "tokens")}, flags...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.stop(); err != nil {
			t.Error(err)
		}
	})
	return d
}

func tlsFlags(dir string) []string {
	return []string{"--tls-cert", filepath.Join(dir, "server.pem"), "--tls-key", filepath.Join(dir, "server.key")}
}

func context30(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// principalOf is who the daemon takes a client with these options to be.
func principalOf(t *testing.T, address string, options ...ffid.Option) (string, error) {
	t.Helper()
	client, err := ffid.NewClient(address, options...)
	if err != nil {
		return "", err
	}
	defer client.Close()
	info, err := client.ServerInfo(context30(t))
	if err != nil {
		return "", err
	}
	return info.GetPrincipal(), nil
}

func wantPrincipal(t *testing.T, want, address string, options ...ffid.Option) {
	t.Helper()
	got, err := principalOf(t, address, options...)
	if err != nil {
		t.Fatalf("principal: %v", err)
	}
	if got != want {
		t.Fatalf("principal %q, want %q", got, want)
	}
}

// cos0 calls cos(0) in a new session.
func cos0(t *testing.T, address string, options ...ffid.Option) (float64, error) {
	t.Helper()
	ctx := context30(t)
	s, err := ffid.Dial(ctx, address, options...)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	libm, err := s.Load(ctx, "libm.so.6")
	if err != nil {
		return 0, err
	}
	cos, err := libm.Function(ctx, "double cos(double)")
	if err != nil {
		return 0, err
	}
	result, err := cos.Call(ctx, 0.0)
	if err != nil {
		return 0, err
	}
	return result.(float64), nil
}

func wantErrorContaining(t *testing.T, err error, target error, text string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", text)
	}
	if target != nil && !errors.Is(err, target) {
		t.Fatalf("error %v is not %v", err, target)
	}
	if !strings.Contains(err.Error(), text) {
		t.Fatalf("error %q lacks %q", err, text)
	}
}

func TestAuthTokenNamesThePrincipal(t *testing.T) {
	d := authDaemon(t, "")
	dir := pki(t)
	wantPrincipal(t, "token:alice", d.address, ffid.WithToken("alice-secret"))
	wantPrincipal(t, "token:alice", d.address, ffid.WithTokenFile(filepath.Join(dir, "alice.token")))
	wantPrincipal(t, fmt.Sprintf("unix:%d", os.Getuid()), d.address)
	// Calls and the session's Connect stream carry it.
	if got, err := cos0(t, d.address, ffid.WithToken("alice-secret")); err != nil || got != 1 {
		t.Fatalf("cos(0) = %v, %v", got, err)
	}
}

func TestAuthTokenFromTheEnvironment(t *testing.T) {
	d := authDaemon(t, "")
	dir := pki(t)
	t.Setenv("FFID_ADDRESS", d.address)
	t.Setenv("FFID_TOKEN", "bob-secret")
	wantPrincipal(t, "token:bob", "")
	// An option wins; WithoutEnvironment ignores FFID_TOKEN.
	wantPrincipal(t, "token:alice", "", ffid.WithToken("alice-secret"))
	wantPrincipal(t, fmt.Sprintf("unix:%d", os.Getuid()), "", ffid.WithoutEnvironment())
	t.Setenv("FFID_TOKEN", "")
	t.Setenv("FFID_TOKEN_FILE", filepath.Join(dir, "alice.token"))
	wantPrincipal(t, "token:alice", "")
}

func TestAuthWrongTokenIsUnauthenticated(t *testing.T) {
	d := authDaemon(t, "")
	_, err := cos0(t, d.address, ffid.WithToken("guessed-token"))
	wantErrorContaining(t, err, ffid.ErrUnauthenticated, "bearer token is not one")
	if ffid.ReasonOf(err) != ffid.ReasonUnauthenticated {
		t.Fatalf("reason %q", ffid.ReasonOf(err))
	}
}

func TestAuthTLSWithTheRightCA(t *testing.T) {
	dir := pki(t)
	d := authDaemon(t, "127.0.0.1:0", tlsFlags(dir)...)
	ca := filepath.Join(dir, "ca.pem")
	wantPrincipal(t, "anonymous", d.address, ffid.WithTLS(ca))
	if got, err := cos0(t, d.address, ffid.WithTLS(ca)); err != nil || got != 1 {
		t.Fatalf("cos(0) = %v, %v", got, err)
	}
	// A token over TLS.
	wantPrincipal(t, "token:alice", d.address, ffid.WithTLS(ca), ffid.WithToken("alice-secret"))
	_, err := principalOf(t, d.address, ffid.WithTLS(ca), ffid.WithToken("guessed-token"))
	wantErrorContaining(t, err, ffid.ErrUnauthenticated, "bearer token is not one")
}

func TestAuthTLSWithTheWrongCANamesTheCA(t *testing.T) {
	dir := pki(t)
	d := authDaemon(t, "127.0.0.1:0", tlsFlags(dir)...)
	other := filepath.Join(dir, "other-ca.pem")
	_, err := principalOf(t, d.address, ffid.WithTLS(other))
	wantErrorContaining(t, err, ffid.ErrUnavailable,
		fmt.Sprintf("the CA file %q (WithTLS, FFID_CA) signed the daemon's certificate", other))
	// gRPC's own account stays in the message.
	wantErrorContaining(t, err, nil, "certificate")
	_, err = principalOf(t, d.address)
	wantErrorContaining(t, err, ffid.ErrUnavailable, "or give its CA (WithTLS, FFID_CA)")
	_, err = cos0(t, d.address, ffid.WithInsecure())
	wantErrorContaining(t, err, ffid.ErrUnavailable, "drop WithInsecure")
}

func TestAuthMutualTLSNamesTheCertificatesCommonName(t *testing.T) {
	dir := pki(t)
	d := authDaemon(t, "127.0.0.1:0", append(tlsFlags(dir), "--tls-client-ca", filepath.Join(dir, "ca.pem"))...)
	ca := ffid.WithTLS(filepath.Join(dir, "ca.pem"))
	cert := ffid.WithClientCertificate(filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key"))
	wantPrincipal(t, "x509:alice", d.address, ca, cert)
	if got, err := cos0(t, d.address, ca, cert); err != nil || got != 1 {
		t.Fatalf("cos(0) = %v, %v", got, err)
	}
	_, err := principalOf(t, d.address, ca)
	wantErrorContaining(t, err, ffid.ErrUnavailable, "also needs a client certificate and key")
	// From the environment.
	t.Setenv("FFID_ADDRESS", d.address)
	t.Setenv("FFID_CA", filepath.Join(dir, "ca.pem"))
	t.Setenv("FFID_CERT", filepath.Join(dir, "client.pem"))
	t.Setenv("FFID_KEY", filepath.Join(dir, "client.key"))
	wantPrincipal(t, "x509:alice", "")
}

func TestAuthInsecureTCP(t *testing.T) {
	d := authDaemon(t, "127.0.0.1:0", "--insecure")
	wantPrincipal(t, "token:alice", d.address, ffid.WithInsecure(), ffid.WithToken("alice-secret"))
	_, err := principalOf(t, d.address)
	wantErrorContaining(t, err, ffid.ErrUnavailable, "started with --insecure needs WithInsecure")
	t.Setenv("FFID_INSECURE", "1")
	wantPrincipal(t, "anonymous", d.address)
}

func TestAuthContradictionsAreRefused(t *testing.T) {
	dir := pki(t)
	cleanEnvironment(t)
	ca := filepath.Join(dir, "ca.pem")
	for _, c := range []struct {
		address string
		options []ffid.Option
		message string
	}{
		{"unix:/nonexistent.sock", []ffid.Option{ffid.WithTLS(ca)}, "which is plaintext"},
		{"h:1", []ffid.Option{ffid.WithClientCertificate(filepath.Join(dir, "client.pem"), "")},
			"needs both the client certificate and its key"},
		{"h:1", []ffid.Option{ffid.WithInsecure(), ffid.WithTLS(ca)}, "contradicts the TLS settings"},
		{"h:1", []ffid.Option{ffid.WithToken("a"), ffid.WithTokenFile(ca)}, "not both"},
		{"h:1", []ffid.Option{ffid.WithTLS("/nonexistent/ca.pem")},
			`cannot read the CA file "/nonexistent/ca.pem"`},
	} {
		_, err := ffid.NewClient(c.address, c.options...)
		wantErrorContaining(t, err, ffid.ErrInvalidRequest, c.message)
	}
}
