import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What a loopback port answered to `HEAD /`.
public enum RestServerAnswer: Sendable, Equatable {
    /// A restic REST server, and our credentials were accepted.
    case restServer
    /// Something answered 401/403: a server that wants other credentials.
    case refusedCredentials
    /// Something answered, but not like a restic REST server.
    case otherService(status: Int)
    /// Nothing listens there, or it did not answer in time.
    case nothing
}

/// A minimal HTTP/1.0 client for our own loopback server. Plain sockets instead of URLSession: it runs
/// on every job start and as the container health check, so it must be fast and light.
public enum RestServerProbe {
    /// `HEAD /` is answered by `rclone serve restic` itself (405 once authenticated, 401 before) without
    /// a request to the backend: probing costs the object store nothing, logs nothing, and does not
    /// fill rclone's object cache (a `HEAD /config` would, and could later hide a failing backend).
    public static func probe(port: Int, credentials: RestCredentials?, timeout: Double = 2) -> RestServerAnswer {
        guard let status = headStatus(host: "127.0.0.1", port: port, path: "/", credentials: credentials, timeout: timeout) else {
            return .nothing
        }
        switch status {
        // rclone serve restic answers exactly this to `HEAD /` (a web application would say 200); who
        // the server is, is a separate question (`ServerIdentity`).
        case 405: return .restServer
        case 401, 403: return .refusedCredentials
        default: return .otherService(status: status)
        }
    }

    static func headStatus(host: String, port: Int, path: String, credentials: RestCredentials?, timeout: Double) -> Int? {
        requestStatus(method: "HEAD", host: host, port: port, path: path, credentials: credentials, timeout: timeout)
    }

    static func requestStatus(method: String, host: String, port: Int, path: String, credentials: RestCredentials?, timeout: Double) -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var time = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host, &address.sin_addr)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return nil }
        var request = "\(method) \(path) HTTP/1.0\r\nHost: \(host):\(port)\r\nAccept: application/vnd.x.restic.rest.v2\r\n"
        if let credentials {
            let token = Data("\(credentials.username):\(credentials.password)".utf8).base64EncodedString()
            request += "Authorization: Basic \(token)\r\n"
        }
        request += "\r\n"
        let sent = request.utf8CString.withUnsafeBufferPointer { send(fd, $0.baseAddress, $0.count - 1, Int32(MSG_NOSIGNAL)) }
        guard sent > 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 512)
        var received = 0
        while received < buffer.count {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + received, $0.count - received, 0) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            received += count
            if buffer[..<received].contains(10) { break }
        }
        // "HTTP/1.1 404 Not Found"
        let statusLine = String(decoding: buffer[..<received], as: UTF8.self).split(separator: "\r\n").first ?? ""
        let words = statusLine.split(separator: " ")
        guard words.count >= 2, words[0].hasPrefix("HTTP/"), let status = Int(words[1]) else { return nil }
        return status
    }
}
