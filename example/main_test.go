package main

import (
	"bytes"
	"strings"
	"testing"
)

// The example finishes every job, the flaky upload on its second attempt,
// and the notification that waited for it with the upload's result.
func TestExample(t *testing.T) {
	t.Setenv("REDIS_URL", "") // the embedded miniredis
	var out bytes.Buffer
	if err := run(&out, false); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if n := strings.Count(got, "status=finished"); n != 4 {
		t.Errorf("%d jobs finished, want 4; output:\n%s", n, got)
	}
	if !strings.Contains(got, `notify: status=finished attempts=1 result="sent https://cdn.example.com/cat_640.jpg"`) {
		t.Errorf("notify did not run after the upload with its result; output:\n%s", got)
	}
	if !strings.Contains(got, "upload: status=finished attempts=2") {
		t.Errorf("upload did not finish on its second attempt; output:\n%s", got)
	}
}
