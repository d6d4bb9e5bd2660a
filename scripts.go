package rqgo

import (
	"embed"

	"github.com/redis/go-redis/v9"
)

//go:embed scripts/*.lua
var scriptFS embed.FS

func loadScript(name string) *redis.Script {
	src, err := scriptFS.ReadFile("scripts/" + name + ".lua")
	if err != nil {
		// The files are embedded at build time; a missing one is a build bug.
		panic("rqgo: missing embedded script " + name)
	}
	return redis.NewScript(string(src))
}

// Every state change of a job is one of these scripts. Script.Run sends
// EVALSHA and falls back to EVAL when Redis does not know the script yet.
var (
	enqueueScript     = loadScript("enqueue")
	enqueueManyScript = loadScript("enqueue_many")
	dequeueScript     = loadScript("dequeue")
	ackManyScript     = loadScript("ack_many")
	failScript        = loadScript("fail")
	extendScript      = loadScript("extend")
	reapScript        = loadScript("reap")
	releaseScript     = loadScript("release")
	cancelScript      = loadScript("cancel")
	requeueScript     = loadScript("requeue")
	emptyScript       = loadScript("empty")
)
