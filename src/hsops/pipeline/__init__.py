"""The lifecycle pipeline: the state machine definition and one handler per stage."""
