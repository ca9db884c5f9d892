// Command pulumi-language-python is resinfra's stand-in for Pulumi's Python language host.
//
// Pulumi's own host (module github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3)
// has no tags and no version of it is served by the Go module proxy this project can reach,
// so it cannot be built here. This host speaks the same LanguageRuntime gRPC protocol
// (sdk/v3/proto/go, language.proto) and leans on the same SDK packages the real one uses:
// the Python toolchains (sdk/v3/python/toolchain: uv, pip, poetry, virtualenv activation),
// the policy-pack proxy (sdk/v3: PolicyProxy) and the real program launcher,
// pulumi-language-python-exec, shipped in the Python SDK's release (sdk/v3 module,
// python/cmd/), beside this binary.
//
// What it implements: Handshake, GetPluginInfo, GetRequiredPackages, Run, InstallDependencies,
// RunPlugin (policy packs and Python plugins), About, GetProgramDependencies,
// RuntimeOptionsPrompts, Cancel. What it leaves out: debugging, type checkers, code
// generation, Pack and Link (none is used by `pulumi up|preview|refresh|destroy`).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/version"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
)

// launcherName is the Python SDK's program launcher, installed beside this binary.
const launcherName = "pulumi-language-python-exec"

func main() {
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.String("tracing", "", "accepted for compatibility; tracing is not emitted")
	flag.Parse()
	if *showVersion {
		fmt.Println(version.Version)
		return
	}
	self, err := os.Executable()
	if err != nil {
		fail(fmt.Errorf("locating this executable: %w", err))
	}
	launcher := filepath.Join(filepath.Dir(self), launcherName)
	if _, err := os.Stat(launcher); err != nil {
		fail(fmt.Errorf("missing %s beside the language host: %w", launcherName, err))
	}
	// The engine passes its own address as the last positional argument.
	engineAddress := ""
	if args := flag.Args(); len(args) > 0 {
		engineAddress = args[len(args)-1]
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	done := make(chan bool)
	go func() { <-ctx.Done(); close(done) }()
	if engineAddress != "" {
		// Exit when the engine goes away, as every Pulumi plugin does.
		if err := rpcutil.Healthcheck(ctx, engineAddress, 5*time.Minute, stop); err != nil {
			fail(fmt.Errorf("starting the engine health check: %w", err))
		}
	}
	host := newHost(launcher, engineAddress)
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: done,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, host)
			return nil
		},
	})
	if err != nil {
		fail(fmt.Errorf("starting the language host's gRPC server: %w", err))
	}
	// The engine reads the port from the first line of stdout.
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fail(fmt.Errorf("language host stopped serving: %w", err))
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "pulumi-language-python: %v\n", err)
	os.Exit(1)
}

// launchArguments is the launcher's command line for one run: its flags are the names
// pulumi-language-python-exec's argparse declares; empty values are left out.
func launchArguments(launcher, engineAddress string, req *pulumirpc.RunRequest) []string {
	args := []string{launcher}
	flags := []struct{ name, value string }{
		{"monitor", req.GetMonitorAddress()},
		{"engine", engineAddress},
		{"project", req.GetProject()},
		{"root_directory", req.GetInfo().GetRootDirectory()},
		{"stack", req.GetStack()},
		{"pwd", req.GetPwd()},
		{"dry_run", strconv.FormatBool(req.GetDryRun())},
		{"parallel", strconv.Itoa(int(req.GetParallel()))},
		{"organization", req.GetOrganization()},
	}
	for _, f := range flags {
		if f.value != "" {
			args = append(args, "--"+f.name, f.value)
		}
	}
	entry := req.GetInfo().GetEntryPoint()
	if entry == "" {
		entry = "."
	}
	args = append(args, entry)
	return append(args, req.GetArgs()...)
}

// configEnvironment is how the Python SDK receives the stack's config: PULUMI_CONFIG, a JSON
// object of namespaced keys to string values, and PULUMI_CONFIG_SECRET_KEYS, a JSON list
// (sdk/python/lib/pulumi/runtime/config.py reads both).
func configEnvironment(req *pulumirpc.RunRequest) ([]string, error) {
	config := req.GetConfig()
	if config == nil {
		config = map[string]string{}
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	configJSON, err := json.Marshal(config)
	if err != nil {
		return nil, err
	}
	keysJSON, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, err
	}
	return []string{"PULUMI_CONFIG=" + string(configJSON), "PULUMI_CONFIG_SECRET_KEYS=" + string(keysJSON)}, nil
}

// userActionableExitCode is the launcher's exit code after it printed an error meant for
// the user (pulumi-language-python-exec): the engine then shows no second error.
const userActionableExitCode = 32

// runError turns the program's exit into the RunResponse the engine expects.
func runError(err error) *pulumirpc.RunResponse {
	if err == nil {
		return &pulumirpc.RunResponse{}
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		if status, ok := exitErr.Sys().(syscall.WaitStatus); ok && status.ExitStatus() == userActionableExitCode {
			return &pulumirpc.RunResponse{Bail: true}
		}
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("program exited with non-zero exit code: %d", exitErr.ExitCode())}
	}
	return &pulumirpc.RunResponse{Error: fmt.Sprintf("could not run the Python program: %v", err)}
}

// pluginVersion turns a PEP 440 release (1.2 or 1.2.3) into the plugin's semver (v1.2.0,
// v1.2.3); pre-releases carry a build suffix that cannot be recovered, so they get none.
func pluginVersion(pep440 string) (string, bool) {
	parts := strings.Split(pep440, ".")
	if len(parts) == 0 || len(parts) > 3 {
		return "", false
	}
	for _, p := range parts {
		if _, err := strconv.Atoi(p); err != nil {
			return "", false
		}
	}
	for len(parts) < 3 {
		parts = append(parts, "0")
	}
	return "v" + strings.Join(parts, "."), true
}
