import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An advisory lock, `flock(2)`, on a file in the state directory.
///
/// Why flock: the kernel drops the lock when the last descriptor of the open file is closed, which
/// happens however its holder ends (exit, crash, SIGKILL), so it can never go stale; and it is held on
/// the file itself, so it works between containers that share the state volume whatever their PID
/// namespaces. (It needs one kernel: two VMs sharing a network file system are not covered.)
public final class FileLock: @unchecked Sendable {
    public let path: String
    /// The open descriptor that holds the lock (close-on-exec; `ProcessSpec.inheritedDescriptors`
    /// hands it to a child on purpose).
    public let descriptor: Int32
    private let lock = NSLock()
    private var released = false

    private init(path: String, descriptor: Int32) {
        self.path = path
        self.descriptor = descriptor
    }

    deinit { release() }

    public enum Failure: Error, Equatable {
        /// The file could not be opened or created (errno).
        case cannotOpen(Int32)
        /// Someone else holds it and the wait ended (timeout or stop request).
        case busy
    }

    /// Opens (creating it, mode 0600) and locks `path`: exclusive or shared. Waits up to `wait`
    /// seconds, polling, and gives up early when `stop()` turns true.
    public static func acquire(_ path: String, exclusive: Bool = true, wait: Double = 0,
                               stop: () -> Bool = { false }, sleep: (Double) -> Void = { Thread.sleep(forTimeInterval: $0) },
                               createExclusively: Bool = false) -> Result<FileLock, Failure> {
        let flags = O_RDWR | O_CREAT | O_CLOEXEC | (createExclusively ? O_EXCL : 0)
        let fd = open(path, flags, 0o600)
        guard fd >= 0 else { return .failure(.cannotOpen(errno)) }
        let operation = (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB
        let end = Date().addingTimeInterval(wait)
        while true {
            if flock(fd, operation) == 0 { return .success(FileLock(path: path, descriptor: fd)) }
            let code = errno
            if code != EWOULDBLOCK && code != EINTR {
                close(fd)
                return .failure(.cannotOpen(code))
            }
            if Date() >= end || stop() {
                close(fd)
                return .failure(.busy)
            }
            sleep(min(0.1, max(0.01, end.timeIntervalSinceNow)))
        }
    }

    /// Whether a live process holds `path` locked exclusively (nil: there is no such file, or it
    /// cannot be opened). Takes a shared lock for an instant, which only an exclusive holder blocks.
    public static func isHeld(_ path: String) -> Bool? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        if flock(fd, LOCK_SH | LOCK_NB) == 0 { return false }
        return errno == EWOULDBLOCK ? true : nil
    }

    /// Replaces the file's content (the lock stays: it belongs to the open file, not to its bytes).
    public func write(_ text: String) {
        var copy = text
        _ = ftruncate(descriptor, 0)
        copy.withUTF8 { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = pwrite(descriptor, buffer.baseAddress! + offset, buffer.count - offset, off_t(offset))
                if written < 0 && errno == EINTR { continue }
                if written <= 0 { return }
                offset += written
            }
        }
    }

    /// Unlocks and closes (idempotent). Another descriptor of the same open file (a child that
    /// inherited it) keeps the lock held until it closes too.
    public func release() {
        lock.lock()
        defer { lock.unlock() }
        guard !released else { return }
        released = true
        close(descriptor)
    }
}

/// Identity of the namespaces this process runs in, as the kernel names them (`pid:[4026531836]`).
/// Two processes see each other's PIDs (or 127.0.0.1) only when these are equal.
public enum Namespaces {
    public static func current(_ kind: String) -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        let length = readlink("/proc/self/ns/\(kind)", &buffer, buffer.count - 1)
        guard length > 0 else { return "" }
        return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static var pid: String { current("pid") }
    public static var network: String { current("net") }
}
