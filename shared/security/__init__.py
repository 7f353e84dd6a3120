"""The chassis' security: what a caller may send (the argument guard and the
store's filter guard against operator injection) and the credentials HTTP
entrypoints check (operator token, signed tracking bodies, member sessions)."""
