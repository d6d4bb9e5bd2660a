package rqgo

import (
	"fmt"
	"os"
	"testing"
)

// childModes are the roles a test can start this test binary in, as a
// separate process (to SIGKILL or SIGSTOP it): the child runs
// childModes[$RQGO_TEST_CHILD] and exits with its result. Test files
// register their modes in init.
var childModes = map[string]func() int{}

func TestMain(m *testing.M) {
	if mode := os.Getenv("RQGO_TEST_CHILD"); mode != "" {
		run, ok := childModes[mode]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown RQGO_TEST_CHILD mode %q\n", mode)
			os.Exit(2)
		}
		os.Exit(run())
	}
	os.Exit(m.Run())
}
