import Foundation

/// Keeps at most `limit` bytes of a stream: its beginning or its end. Memory stays flat however
/// much a child prints (restic can print millions of lines).
struct BoundedBuffer {
    enum Keep { case head, tail }

    let limit: Int
    let keep: Keep
    private var storage: [UInt8] = []
    private(set) var droppedBytes = 0

    init(limit: Int, keep: Keep) {
        self.limit = max(0, limit)
        self.keep = keep
        storage.reserveCapacity(min(self.limit, 64 * 1024))
    }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard limit > 0 else {
            droppedBytes += bytes.count
            return
        }
        switch keep {
        case .head:
            let room = limit - storage.count
            storage.append(contentsOf: bytes.prefix(max(0, room)))
            droppedBytes += max(0, bytes.count - room)
        case .tail:
            if bytes.count >= limit {
                droppedBytes += storage.count + bytes.count - limit
                storage = Array(bytes.suffix(limit))
                return
            }
            storage.append(contentsOf: bytes)
            // Trim in batches (when twice the limit) so each byte is moved a bounded number of times.
            if storage.count > 2 * limit {
                let excess = storage.count - limit
                storage.removeFirst(excess)
                droppedBytes += excess
            }
        }
    }

    mutating func append(_ string: String) {
        var copy = string
        copy.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }

    /// The kept bytes as text. A tail starts at a line boundary when it was cut.
    var text: String {
        var bytes = storage[...]
        if keep == .tail, bytes.count > limit {
            bytes = bytes.suffix(limit)
        }
        if keep == .tail, droppedBytes > 0 || storage.count > limit, let newline = bytes.firstIndex(of: 10) {
            bytes = bytes[(newline + 1)...]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    var wasCut: Bool { droppedBytes > 0 || storage.count > limit }
}
