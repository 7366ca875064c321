"""The user-facing commands of `flow2one COMMAND`, one module each, named after the command (dashes become
underscores; a leading underscore marks a module shared by several commands). A command module only turns its
arguments into calls of the core packages and prints or writes what they return."""
