import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A TCP server on 127.0.0.1 run by the test itself: each accepted connection is handed to `serve`
/// on a thread of its own. `stop()` closes the listener and every connection (a client waiting on one
/// then sees it end).
final class LoopbackServer: @unchecked Sendable {
    let port: Int
    private let listener: Int32
    private let lock = NSLock()
    private var connections: [Int32] = []
    private var stopped = false

    init(serve: @escaping @Sendable (_ connection: Int32, _ server: LoopbackServer) -> Void) throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard listener >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(listener, 16) == 0 else {
            close(listener)
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        self.listener = listener
        Thread.detachNewThread { [self] in
            while true {
                let connection = accept(listener, nil, nil)
                guard connection >= 0 else { return }
                guard register(connection) else { close(connection); return }
                Thread.detachNewThread {
                    serve(connection, self)
                    self.finish(connection)
                }
            }
        }
    }

    private func register(_ connection: Int32) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if stopped { return false }
        connections.append(connection)
        return true
    }

    private func finish(_ connection: Int32) {
        lock.lock()
        defer { lock.unlock() }
        connections.removeAll { $0 == connection }
        close(connection)
    }

    var isStopped: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopped
    }

    func stop() {
        lock.lock()
        defer { lock.unlock() }
        guard !stopped else { return }
        stopped = true
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        // Shut down, not closed: its serving thread closes it when it returns.
        for connection in connections { shutdown(connection, Int32(SHUT_RDWR)) }
    }

    /// The request's head and body (by Content-Length), or nil when the client went away first.
    static func readRequest(_ connection: Int32) -> (head: String, body: Data)? {
        var received = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            if let end = received.range(of: Data("\r\n\r\n".utf8)) {
                let head = String(decoding: received[..<end.lowerBound], as: UTF8.self)
                let length = head.split(separator: "\r\n").compactMap { line -> Int? in
                    let parts = line.split(separator: ":", maxSplits: 1)
                    guard parts.count == 2, parts[0].lowercased() == "content-length" else { return nil }
                    return Int(parts[1].trimmingCharacters(in: .whitespaces))
                }.first ?? 0
                var body = Data(received[end.upperBound...])
                if head.lowercased().contains("expect: 100-continue") && body.count < length {
                    _ = write(connection, "HTTP/1.1 100 Continue\r\n\r\n")
                }
                while body.count < length {
                    let count = recv(connection, &buffer, buffer.count, 0)
                    guard count > 0 else { return nil }
                    body.append(contentsOf: buffer[0..<count])
                }
                return (head, body)
            }
            let count = recv(connection, &buffer, buffer.count, 0)
            guard count > 0 else { return nil }
            received.append(contentsOf: buffer[0..<count])
        }
    }

    /// Writes all of `text`; false once the peer is gone (never SIGPIPE).
    @discardableResult
    static func write(_ connection: Int32, _ text: String) -> Bool {
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { return false }
            sent += count
        }
        return true
    }
}
