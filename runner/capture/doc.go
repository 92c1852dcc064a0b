// Package capture is the capture file of usocks sessions: its format
// (format.go) and parsing (parse.go, reader.go), the writer and the taps a
// session sets on its stages (writer.go), and replay, which lists a file
// record by record through the same record decoder the tunnel uses
// (replay*.go).
package capture
