import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum ConnectResult { case success, failure(String) }

/// Resolves `host` and opens a TCP connection, each step within `timeout` seconds.
func connectTCP(host: String, port: Int, timeout: Double) -> ConnectResult {
    let addresses: [ResolvedAddress]
    switch resolveAddresses(host: host, port: port, timeout: timeout) {
    case .success(let list): addresses = list
    case .failure(let reason): return .failure(reason)
    }
    var lastError = "no address"
    for address in addresses {
        let fd = streamSocket(family: address.family, type: address.socketType, protocolNumber: address.protocolNumber)
        guard fd >= 0 else { continue }
        defer { close(fd) }
        let connected = address.bytes.withUnsafeBytes { bytes in
            connect(fd, bytes.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(bytes.count))
        }
        if connected == 0 { return .success }
        guard errno == EINPROGRESS else {
            lastError = String(cString: strerror(errno))
            continue
        }
        var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        let ready = poll(&poller, 1, Int32(timeout * 1000))
        if ready <= 0 {
            lastError = "timed out after \(Int(timeout)) s"
            continue
        }
        var socketError: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &socketError, &length)
        if socketError == 0 { return .success }
        lastError = String(cString: strerror(socketError))
    }
    return .failure(lastError)
}

/// A non-blocking socket, close-on-exec from the start: a child spawned meanwhile by another thread
/// must not inherit it.
func streamSocket(family: Int32, type: Int32, protocolNumber: Int32) -> Int32 {
    socket(family, type | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), protocolNumber)
}

/// One answer of getaddrinfo, copied out of its list (which is freed on the resolving thread).
struct ResolvedAddress: Sendable {
    var family: Int32
    var socketType: Int32
    var protocolNumber: Int32
    var bytes: [UInt8]
}

enum ResolveResult: Sendable { case success([ResolvedAddress]), failure(String) }

/// getaddrinfo has no timeout of its own, and the resolver's retries can take minutes: it runs on a
/// thread of its own, abandoned after `timeout`. That thread owns everything it touches (the host
/// string, its list, the slot it answers into), so finishing late harms nothing.
func resolveAddresses(host: String, port: Int, timeout: Double) -> ResolveResult {
    let answer = waitAtMost(seconds: timeout, threadName: "resolve \(host)") { () -> ResolveResult in
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let resolved = getaddrinfo(host, "\(port)", &hints, &list)
        guard resolved == 0, list != nil else {
            let reason = resolved == EAI_SYSTEM ? String(cString: strerror(errno)) : String(cString: gai_strerror(resolved))
            return .failure("DNS: \(reason)")
        }
        defer { freeaddrinfo(list) }
        var addresses: [ResolvedAddress] = []
        var entry = list
        while let address = entry {
            if let socketAddress = address.pointee.ai_addr {
                let bytes = Array(UnsafeRawBufferPointer(start: socketAddress, count: Int(address.pointee.ai_addrlen)))
                addresses.append(ResolvedAddress(family: address.pointee.ai_family, socketType: address.pointee.ai_socktype,
                                                 protocolNumber: address.pointee.ai_protocol, bytes: bytes))
            }
            entry = address.pointee.ai_next
        }
        return .success(addresses)
    }
    return answer ?? .failure("DNS: no answer within \(Int(timeout)) s")
}

/// Runs `work` on a thread of its own and waits at most `seconds` for it: nil past that, and the
/// thread is left to finish alone (its result then goes into a slot nobody reads).
func waitAtMost<Value: Sendable>(seconds: Double, threadName: String, _ work: @escaping @Sendable () -> Value) -> Value? {
    let slot = AnswerSlot<Value>()
    let thread = Thread { slot.fill(work()) }
    thread.name = threadName
    thread.start()
    return slot.take(waitingAtMost: seconds)
}

/// Where a thread that may be abandoned puts its answer. Reference-counted, so it lives as long as
/// the later of the waiter and the thread.
final class AnswerSlot<Value: Sendable>: Sendable {
    private let value = Locked<Value?>(nil)
    private let filled = DispatchSemaphore(value: 0)

    func fill(_ answer: Value) {
        value.withLock { $0 = answer }
        filled.signal()
    }

    func take(waitingAtMost seconds: Double) -> Value? {
        guard filled.wait(timeout: .now() + seconds) == .success else { return nil }
        return value.withLock { $0 }
    }
}
