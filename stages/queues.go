package stages

// Every channel capacity and buffer size of the pipeline, in one place.
// Memory per session is bounded by these and by the stream limit:
// roughly MaxStreams × streamWindow for received data at the very worst,
// plus the queues below.
const (
	// ChunkQueueLen is the backend reader → decrypt queue, in chunks.
	ChunkQueueLen = 8
	// chunkSize is how much the backend reader asks the socket for at once.
	chunkSize = 64 * 1024
	// FrameQueueLen is the decrypt → demux queue, in frames.
	FrameQueueLen = 64
	// DataQueueLen is the fan-in queue stream actors → mux, in frames.
	DataQueueLen = 256
	// ControlQueueLen is the priority queue for control frames (WINDOW,
	// RST, PONG) → mux. Senders that must not block (demux) drop and count
	// when it is full.
	ControlQueueLen = 1024
	// BatchQueueLen is mux → encrypt and encrypt → backend writer, in batches.
	BatchQueueLen = 4
	// maxBatchFrames bounds how many frames the mux gathers into one batch.
	maxBatchFrames = 64
	// maxBatchBytes bounds the payload bytes of one batch.
	maxBatchBytes = 256 * 1024
	// streamWindow is the initial per-stream receive window in bytes. Each
	// side starts with this much credit toward the other (SPEC-v2.md).
	streamWindow = 256 * 1024
	// maxStreamWindow caps a stream's receive window as auto-tuning grows
	// it for a fast reader (see stream.down).
	maxStreamWindow = 2 << 20
	// windowUpdateThreshold: the receiver returns credit once this much
	// has been consumed, so WINDOW frames are rare.
	windowUpdateThreshold = streamWindow / 4
	// coalesceBelow: received payloads smaller than this are copied into
	// the previous buffered chunk, so tiny frames cannot multiply memory.
	coalesceBelow = 2048
)
