package cli_test

import (
	"context"
	"os"

	"github.com/rqgo/rqgo"
	"github.com/rqgo/rqgo/cli"
)

type resizeArgs struct {
	Path  string `json:"path"`
	Width int    `json:"width"`
}

func resize(ctx context.Context, a resizeArgs) (string, error) {
	return a.Path + ".small", nil
}

// An application's own rqgo command: "myapp worker --queues default" runs
// the Go functions registered here (and any --exec commands), and every
// other subcommand works as in the stock rqgo binary.
func ExampleMain() {
	os.Exit(cli.Main(os.Args[1:],
		cli.Program("myapp"),
		cli.HandleFunc("hello", func(ctx context.Context, j *rqgo.Job) (any, error) {
			return "hello, " + string(j.Args), nil
		}),
		cli.Setup(func(w *rqgo.Worker) {
			rqgo.RegisterFunc(w, "resize", resize)
		}),
	))
}
