package ffid_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests run against the real daemon built by CMake, on a temporary unix
// socket. Paths come from the environment (ctest sets them), else the
// default build:
//
//	FFID_BIN                the daemon         (build/default/bin/ffid)
//	FFID_WORKER_BIN         its worker         (beside FFID_BIN)
//	FFID_FIXTURE            libffid_fixture.so (build/default/tests/fixtures/)
//	FFID_CALLBACKS_FIXTURE  libffid_callbacks_fixture.so (beside FFID_FIXTURE)
var (
	ffidBin          = pathFromEnv("FFID_BIN", "../../build/default/bin/ffid")
	workerBin        = pathFromEnv("FFID_WORKER_BIN", filepath.Join(filepath.Dir(ffidBin), "ffid-worker"))
	fixture          = pathFromEnv("FFID_FIXTURE", "../../build/default/tests/fixtures/libffid_fixture.so")
	callbacksFixture = pathFromEnv("FFID_CALLBACKS_FIXTURE",
		filepath.Join(filepath.Dir(fixture), "libffid_callbacks_fixture.so"))
)

// The system library directories: --allow-library replaces the daemon's
// defaults, so they are listed again.
var systemLibraryGlobs = []string{"/lib/*", "/lib64/*", "/usr/lib/*", "/usr/lib64/*", "/usr/local/lib/*"}

func pathFromEnv(variable, fallback string) string {
	path := os.Getenv(variable)
	if path == "" {
		path = fallback
	}
	absolute, err := filepath.Abs(path)
	if err != nil {
		return path
	}
	return absolute
}

// daemon is a running ffid with its temporary directories.
type daemon struct {
	dir           string
	address       string
	allowedDir    string // on the allowlist
	notAllowedDir string // not on the allowlist
	logPath       string
	cmd           *exec.Cmd
	exited        chan struct{} // closed when the daemon has exited
}

// testDaemon is the daemon TestMain starts for every test.
var testDaemon *daemon

func TestMain(m *testing.M) {
	var err error
	testDaemon, err = startDaemon("")
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot start ffid:", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := testDaemon.stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// startDaemon starts ffid on a unix socket in a new directory, or on listen
// (a host:port; the daemon's address is then the one it reports) with
// flags added to its command line.
func startDaemon(listen string, flags ...string) (*daemon, error) {
	for _, path := range []string{ffidBin, workerBin, fixture, callbacksFixture} {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("%v (build first: cmake --build --preset default; or set FFID_BIN, "+
				"FFID_WORKER_BIN, FFID_FIXTURE, FFID_CALLBACKS_FIXTURE)", err)
		}
	}
	dir, err := os.MkdirTemp("", "ffid-go-test-")
	if err != nil {
		return nil, err
	}
	d := &daemon{dir: dir, address: "unix:" + filepath.Join(dir, "ffid.sock"),
		allowedDir: filepath.Join(dir, "allowed"), notAllowedDir: filepath.Join(dir, "not-allowed"),
		logPath: filepath.Join(dir, "ffid.log")}
	for _, sub := range []string{d.allowedDir, d.notAllowedDir} {
		if err := os.Mkdir(sub, 0o700); err != nil {
			return nil, err
		}
	}
	args := []string{"--listen", d.address, "--worker-path", workerBin}
	if listen != "" {
		args[1] = listen
	}
	for _, glob := range append([]string{filepath.Dir(fixture) + "/*", d.allowedDir + "/*"}, systemLibraryGlobs...) {
		args = append(args, "--allow-library", glob)
	}
	args = append(args, flags...)
	log, err := os.Create(d.logPath)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	d.cmd = exec.Command(ffidBin, args...)
	d.cmd.Stdout = log
	d.cmd.Stderr = log
	// Sanitized builds: a native crash must kill the worker with its real
	// signal, and LeakSanitizer's exit-time tracer is refused by a worker's
	// seccomp policy (see tests/conformance/README.md).
	asan := os.Getenv("ASAN_OPTIONS")
	if asan != "" {
		asan += ":"
	}
	d.cmd.Env = append(os.Environ(),
		"ASAN_OPTIONS="+asan+"handle_segv=0:handle_sigbus=0:handle_sigfpe=0:detect_leaks=0")
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	d.exited = make(chan struct{})
	go func() {
		_ = d.cmd.Wait()
		close(d.exited)
	}()
	socket := strings.TrimPrefix(d.address, "unix:")
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		text, _ := os.ReadFile(d.logPath)
		if listen != "" {
			if _, after, found := strings.Cut(string(text), "ffid: listening on "); found &&
				strings.Contains(after, "\n") {
				d.address, _, _ = strings.Cut(after, "\n")
				return d, nil
			}
		} else if _, err := os.Stat(socket); err == nil && strings.Contains(string(text), "ffid: listening on ") {
			return d, nil
		}
		select {
		case <-d.exited:
			return nil, fmt.Errorf("ffid exited; its log:\n%s", text)
		case <-time.After(10 * time.Millisecond):
		}
	}
	_ = d.cmd.Process.Kill()
	return nil, fmt.Errorf("ffid did not start listening within 60 s; its log is %s", d.logPath)
}

// stop ends the daemon with SIGTERM and removes its directory.
func (d *daemon) stop() error {
	defer os.RemoveAll(d.dir)
	select {
	case <-d.exited:
		text, _ := os.ReadFile(d.logPath)
		return fmt.Errorf("ffid had exited before the end of the tests; its log:\n%s", text)
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(20 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
	return nil
}
