package apptest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

var npmCI struct {
	once sync.Once
	dir  string
	err  error
}

// NodeClient returns the directory of the pinned Node clients
// (test/graphql-ws-client), after making sure node and npm are there and
// the pinned packages installed: npm ci, from the lockfile, when
// node_modules is missing or older than the lockfile. Without node it
// fails on CI and skips elsewhere.
func NodeClient(t testing.TB) string {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			msg := fmt.Sprintf("the npm client checks need %s on PATH (Node.js 20 or newer): %v", tool, err)
			if os.Getenv("CI") != "" {
				t.Fatal(msg)
			}
			t.Skip(msg + "; set CI=true to make this a failure")
		}
	}
	npmCI.once.Do(func() { npmCI.dir, npmCI.err = installNodeClient() })
	if npmCI.err != nil {
		t.Fatal(npmCI.err)
	}
	return npmCI.dir
}

func installNodeClient() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "test", "graphql-ws-client")
	lockFile, err := os.Open(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return "", fmt.Errorf("node client: %w", err)
	}
	defer lockFile.Close()
	// Test binaries of several packages run at once: one npm ci at a time.
	if err := syscall.Flock(int(lockFile.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", lockFile.Name(), err)
	}
	defer syscall.Flock(int(lockFile.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing unlocks too
	lock, err := lockFile.Stat()
	if err != nil {
		return "", fmt.Errorf("node client: %w", err)
	}
	installed, err := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json"))
	if err == nil && !installed.ModTime().Before(lock.ModTime()) {
		return dir, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm ci in %s: %w\n%s", dir, err, out)
	}
	return dir, nil
}

// moduleRoot is the nearest directory above the working directory (a
// test's package directory) that holds go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("module root: no go.mod above the working directory")
		}
		dir = parent
	}
}
