"""Pure order rules (no I/O, `now` passed in): the state machine (`states`), pricing
arithmetic (`pricing`), payment decisions (`payment`), returns and refunds (`returns`)."""
