// Command rqgo runs and inspects rqgo job queues in Redis: it runs workers
// whose functions are shell commands (--exec NAME=COMMAND), enqueues jobs,
// shows jobs and queues, and requeues, cancels and deletes jobs. Run
// "rqgo --help" for the commands, and see package
// github.com/rqgo/rqgo/cli to build the same command around Go functions.
package main

import (
	"os"
	_ "time/tzdata" // schedule time zones work in containers without zoneinfo

	"github.com/rqgo/rqgo/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], cli.Program("rqgo")))
}
