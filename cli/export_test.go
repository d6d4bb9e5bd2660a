package cli

// Test access to the --exec handler and the worker's process groups.

type ProcessGroups = processGroups

func (g *processGroups) KillAll() { g.killAll() }

func ExecHandler(name, command string, g *ProcessGroups) *execHandler {
	return &execHandler{name: name, command: command, groups: g}
}
