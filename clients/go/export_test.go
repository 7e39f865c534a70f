package ffid

// UsePiecesOnly makes s send big transfers as unary pieces, as it does to a
// daemon without WriteStream and ReadStream: for the tests of that path.
func UsePiecesOnly(s *Session) { s.piecesOnly.Store(true) }
