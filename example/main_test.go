package main

import (
	"bytes"
	"strings"
	"testing"
)

// The example finishes every job, the flaky upload on its second attempt.
func TestExample(t *testing.T) {
	t.Setenv("REDIS_URL", "") // the embedded miniredis
	var out bytes.Buffer
	if err := run(&out, false); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if n := strings.Count(got, "status=finished"); n != 3 {
		t.Errorf("%d jobs finished, want 3; output:\n%s", n, got)
	}
	if !strings.Contains(got, "upload: status=finished attempts=2") {
		t.Errorf("upload did not finish on its second attempt; output:\n%s", got)
	}
}
