package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/rqgo/rqgo"
)

// Exit codes returned by [Main].
const (
	ExitOK    = 0 // the command did what it was asked
	ExitError = 1 // a runtime error: Redis unreachable, job not found, ...
	ExitUsage = 2 // a usage error: unknown command or flag, bad argument
)

// Option configures [Main].
type Option func(*config)

type config struct {
	prog     string
	stdin    io.Reader
	stdout   io.Writer
	stderr   io.Writer
	ctx      context.Context
	logger   *slog.Logger
	handlers []namedHandler
	setups   []func(*rqgo.Worker)
}

type namedHandler struct {
	name string
	h    rqgo.Handler
}

// Handle registers h for jobs whose function is name on every worker the
// command starts. An --exec flag for the same name replaces it.
func Handle(name string, h rqgo.Handler) Option {
	return func(c *config) { c.handlers = append(c.handlers, namedHandler{name, h}) }
}

// HandleFunc is [Handle] for a function.
func HandleFunc(name string, fn rqgo.HandlerFunc) Option {
	return Handle(name, fn)
}

// Setup calls fn with each worker the command starts, before its --exec
// handlers are registered and before it runs. Use it for
// [rqgo.RegisterFunc], which decodes each job's args into a Go type.
func Setup(fn func(w *rqgo.Worker)) Option {
	return func(c *config) { c.setups = append(c.setups, fn) }
}

// Program sets the command's name in help and error messages. Default: the
// base name of os.Args[0].
func Program(name string) Option {
	return func(c *config) { c.prog = name }
}

// Stdio sets where the command reads and writes. Default: os.Stdin,
// os.Stdout and os.Stderr.
func Stdio(stdin io.Reader, stdout, stderr io.Writer) Option {
	return func(c *config) { c.stdin, c.stdout, c.stderr = stdin, stdout, stderr }
}

// Logger sets where workers log. Default: text lines on the command's
// stderr.
func Logger(l *slog.Logger) Option {
	return func(c *config) { c.logger = l }
}

// Context sets the context the command runs under; when it ends, a worker
// shuts down as on SIGINT. Default: [context.Background].
func Context(ctx context.Context) Option {
	return func(c *config) { c.ctx = ctx }
}

// command is one subcommand. setup defines its flags on fs and returns the
// function that runs it with the positional arguments once fs is parsed.
// A new subcommand (for example "schedule") is one more entry in commands.
type command struct {
	name     string
	summary  string // one line, for the command list
	synopsis string // the arguments after "<prog> <name> "
	help     string // what it does, with examples; %[1]s is the program name
	setup    func(fs *flag.FlagSet, e *env) func(ctx context.Context, args []string) error
}

var commands []*command // filled in by init, in the order --help lists them

func init() {
	commands = []*command{workerCommand, enqueueCommand, waitCommand, jobCommand, infoCommand, scheduleCommand,
		requeueCommand, cancelCommand, emptyCommand, pauseCommand, resumeCommand, limitsCommand, dashboardCommand}
}

func lookup(name string) *command {
	i := slices.IndexFunc(commands, func(c *command) bool { return c.name == name })
	if i < 0 {
		return nil
	}
	return commands[i]
}

// Main runs the rqgo command with args (the command line without the
// program name) and returns its exit code: [ExitOK], [ExitError] or
// [ExitUsage]. Errors are written to stderr as one line; help goes to
// stdout. Main silences go-redis's own logger, which would otherwise print
// connection errors a second time.
//
// The stock binary is
//
//	func main() { os.Exit(cli.Main(os.Args[1:])) }
//
// An application that registers Go functions passes them with [Handle],
// [HandleFunc] or [Setup]; its binary then has the same subcommands, and its
// workers run those functions as well as any --exec commands.
func Main(args []string, opts ...Option) int {
	c := &config{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, ctx: context.Background()}
	if len(os.Args) > 0 {
		c.prog = filepath.Base(os.Args[0])
	}
	for _, o := range opts {
		o(c)
	}
	if c.prog == "" {
		c.prog = "rqgo"
	}
	e := &env{config: c}
	if c.logger == nil {
		// Log lines, like errors, never show the password of --url.
		c.logger = slog.New(slog.NewTextHandler(redactingWriter{e}, nil))
	}
	redis.SetLogger(quietLogger{})
	defer e.close()
	return e.run(args)
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// env is one run of the command: its configuration, global flags and
// Redis connection.
type env struct {
	*config
	url    string
	prefix string
	cmd    *command // nil before the subcommand is known
	rdb    redis.UniversalClient
	tls    tlsFlags
}

func (e *env) close() {
	if e.rdb != nil {
		e.rdb.Close()
	}
}

// globalFlags defines --url and --prefix on fs. Both the top level and each
// subcommand accept them, so they can come before or after the command.
func (e *env) globalFlags(fs *flag.FlagSet) {
	fs.StringVar(&e.url, "url", e.url, "Redis `URL`, rediss:// for TLS (default $REDIS_URL, else redis://127.0.0.1:6379/0)")
	fs.StringVar(&e.prefix, "prefix", e.prefix, "key `PREFIX` of the queues (default $RQGO_PREFIX, else rqgo)")
	fs.StringVar(&e.tls.ca, "tls-ca", e.tls.ca, "with rediss://: trust the CA certificates in `FILE` (PEM)")
	fs.StringVar(&e.tls.cert, "tls-cert", e.tls.cert, "with rediss://: client certificate `FILE` (PEM), with --tls-key")
	fs.StringVar(&e.tls.key, "tls-key", e.tls.key, "with rediss://: client key `FILE` (PEM), with --tls-cert")
	fs.BoolVar(&e.tls.insecure, "tls-insecure", e.tls.insecure, "with rediss://: do not verify the server's certificate (testing only)")
}

func (e *env) run(args []string) int {
	e.url = os.Getenv("REDIS_URL")
	if e.url == "" {
		e.url = "redis://127.0.0.1:6379/0"
	}
	e.prefix = os.Getenv("RQGO_PREFIX")
	if e.prefix == "" {
		e.prefix = rqgo.DefaultPrefix
	}
	top := newFlagSet(e.prog)
	e.globalFlags(top)
	if err := top.Parse(args); err != nil {
		return e.fail(flagError(err))
	}
	rest := top.Args()
	if len(rest) == 0 {
		e.topUsage(e.stderr)
		return ExitUsage
	}
	name := rest[0]
	if name == "help" {
		return e.help(rest[1:])
	}
	e.cmd = lookup(name)
	if e.cmd == nil {
		return e.fail(usagef("unknown command %q", name))
	}
	fs := newFlagSet(e.prog + " " + name)
	e.globalFlags(fs)
	runCmd := e.cmd.setup(fs, e)
	pos, err := parseInterspersed(fs, rest[1:])
	if err != nil {
		return e.fail(flagError(err))
	}
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	return e.fail(runCmd(ctx, pos))
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // Main prints errors and help itself
	fs.Usage = func() {}
	return fs
}

// parseInterspersed parses fs from args, allowing flags after positional
// arguments ("job ID --json"), and returns the positional arguments. After
// "--" everything is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// fail reports err and returns the exit code for it.
func (e *env) fail(err error) int {
	if err == nil {
		return ExitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		if e.cmd != nil {
			e.cmdHelp(e.stdout, e.cmd)
		} else {
			e.topUsage(e.stdout)
		}
		return ExitOK
	}
	where := e.prog
	if e.cmd != nil {
		where += " " + e.cmd.name
	}
	// The last safety net: whatever the error quotes, no URL's user info
	// and no password of --url reaches stderr.
	fmt.Fprintf(e.stderr, "%s: %s\n", where, e.redact(oneLine(err)))
	var ue *usageError
	switch {
	case errors.As(err, &ue):
		if e.cmd != nil {
			fmt.Fprintf(e.stderr, "usage: %s %s %s\nRun '%s %s --help' for details.\n",
				e.prog, e.cmd.name, e.cmd.synopsis, e.prog, e.cmd.name)
		} else {
			fmt.Fprintf(e.stderr, "usage: %s [--url URL] [--prefix PREFIX] COMMAND [ARGS]\nCommands: %s\nRun '%s --help' for details.\n",
				e.prog, strings.Join(commandNames(), ", "), e.prog)
		}
		return ExitUsage
	case errors.Is(err, rqgo.ErrInvalid), errors.Is(err, errBadURL):
		return ExitUsage
	}
	return ExitError
}

// flagError makes an error of flag.FlagSet.Parse (an unknown flag, a value
// that does not parse) a usage error; --help stays flag.ErrHelp.
func flagError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return &usageError{err.Error()}
}

// oneLine turns err into one line without the library's "rqgo: " prefix.
func oneLine(err error) string {
	s := strings.TrimPrefix(err.Error(), "rqgo: ")
	s = strings.ReplaceAll(s, "\nrqgo: ", "; ")
	return strings.ReplaceAll(s, "\n", "; ")
}

func commandNames() []string {
	names := make([]string, len(commands))
	for i, c := range commands {
		names[i] = c.name
	}
	return names
}

func (e *env) help(args []string) int {
	if len(args) == 0 {
		e.topUsage(e.stdout)
		return ExitOK
	}
	c := lookup(args[0])
	if c == nil {
		return e.fail(usagef("unknown command %q", args[0]))
	}
	e.cmdHelp(e.stdout, c)
	return ExitOK
}

func (e *env) topUsage(w io.Writer) {
	fmt.Fprintf(w, `%[1]s runs and inspects rqgo job queues in Redis.

Usage:
  %[1]s [--url URL] [--prefix PREFIX] COMMAND [ARGS]

Commands:
`, e.prog)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, `
Global flags (before or after the command):
  --url URL        Redis URL; default $REDIS_URL, else redis://127.0.0.1:6379/0
                   (rediss:// for TLS, redis://:PASSWORD@HOST:PORT/DB)
  --prefix PREFIX  key prefix of the queues; default $RQGO_PREFIX, else rqgo

Exit status: 0 success, 1 runtime error (for example Redis unreachable, job
not found), 2 usage error (unknown command or flag, invalid argument).

Example:
  id=$(%[1]s enqueue resize '{"path":"a.png"}')
  %[1]s enqueue --depends-on "$id" notify
  %[1]s worker --queues default --burst --exec 'resize=./resize.sh' --exec 'notify=./notify.sh'
  %[1]s job "$id"
  %[1]s wait "$id"

Run '%[1]s COMMAND --help' for a command's flags and examples.
`, e.prog)
}

func (e *env) cmdHelp(w io.Writer, c *command) {
	fmt.Fprintf(w, "Usage: %s %s %s\n\n", e.prog, c.name, c.synopsis)
	fmt.Fprintf(w, strings.TrimSpace(c.help)+"\n", e.prog)
	// A fresh env, so defaults from the environment (a URL may hold a
	// password) are not shown.
	fs := newFlagSet(e.prog + " " + c.name)
	h := &env{config: e.config}
	c.setup(fs, h)
	h.globalFlags(fs)
	fmt.Fprintf(w, "\nFlags:\n")
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if arg != "" {
			line += " " + arg
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "%s\n      %s\n", line, usage)
	})
}
