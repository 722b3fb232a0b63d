import Foundation
#if canImport(Glibc)
import Glibc
#endif

// The write end of the self-pipe: the only thing the C signal handler touches.
nonisolated(unsafe) private var signalPipeWriteEnd: Int32 = -1

private func forwardSignalToPipe(_ signal: Int32) {
    var byte = UInt8(truncatingIfNeeded: signal)
    let savedErrno = errno
    _ = write(signalPipeWriteEnd, &byte, 1)
    errno = savedErrno
}

/// Turns SIGINT/SIGTERM/SIGHUP into calls on an ordinary thread. A real handler (not SIG_IGN, which
/// children would inherit) writes the signal number to a pipe; a thread reads it and calls whoever
/// registered. Handlers are reset to the default in children by the process runner.
public final class SignalMonitor: @unchecked Sendable {
    public static let shared = SignalMonitor()

    private let lock = NSLock()
    private var handlers: [Int: @Sendable (Int32) -> Void] = [:]
    private var nextToken = 0
    private var installed = false
    private(set) public var received: Int32?

    /// Installs the handlers once; safe to call again.
    public func install(_ signals: [Int32] = [SIGINT, SIGTERM, SIGHUP]) {
        lock.lock()
        defer { lock.unlock() }
        guard !installed else { return }
        installed = true
        var fds: [Int32] = [0, 0]
        guard systemPipe2(&fds, O_CLOEXEC) == 0 else { return }
        signalPipeWriteEnd = fds[1]
        for signal in signals {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = forwardSignalToPipe
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(signal, &action, nil)
        }
        let readEnd = fds[0]
        let thread = Thread { [self] in
            var byte: UInt8 = 0
            while true {
                let count = read(readEnd, &byte, 1)
                if count < 0 && errno == EINTR { continue }
                if count <= 0 { return }
                self.deliver(Int32(byte))
            }
        }
        thread.name = "signals"
        thread.start()
    }

    private func deliver(_ signal: Int32) {
        lock.lock()
        if received == nil { received = signal }
        let current = handlers.sorted { $0.key < $1.key }.map(\.value)
        lock.unlock()
        current.forEach { $0(signal) }
    }

    /// Delivers a signal as if it had arrived (tests of what jobs do after a stop request).
    func simulateForTests(_ signal: Int32) {
        deliver(signal)
    }

    /// Calls `handler` for every signal until the returned token is passed to `remove`.
    @discardableResult
    public func add(_ handler: @escaping @Sendable (Int32) -> Void) -> Int {
        lock.lock()
        defer { lock.unlock() }
        nextToken += 1
        handlers[nextToken] = handler
        return nextToken
    }

    public func remove(_ token: Int) {
        lock.lock()
        handlers.removeValue(forKey: token)
        lock.unlock()
    }

    public var stopRequested: Bool {
        lock.lock()
        defer { lock.unlock() }
        return received != nil
    }
}

/// Runs a child so that a stop request reaches it the way restic needs: SIGINT first (restic then
/// removes its lock and exits 130), the remaining grace period, then SIGKILL.
public func runInterruptibly(_ spec: ProcessSpec, runner: any ProcessRunning, signals: SignalMonitor,
                             graceSeconds: Int, log: Logger) throws -> ProcessResult {
    let child = try runner.launch(spec)
    let asked = OnceFlag()
    let token = signals.add { signal in
        guard asked.setFirstTime() else {
            log.info("received \(signalName(signal)) again: already stopping")
            return
        }
        log.info("received \(signalName(signal)): asking \(spec.executable) (PID \(child.pid)) to stop (SIGINT), up to \(graceSeconds) s before SIGKILL")
        child.send(SIGINT)
        DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(graceSeconds)) {
            if !child.hasExited {
                log.warning("\(spec.executable) did not stop within \(graceSeconds) s: sending SIGKILL")
                child.send(SIGKILL)
            }
        }
    }
    defer { signals.remove(token) }
    // A signal that arrived before the child existed still counts.
    if signals.stopRequested && asked.setFirstTime() { child.send(SIGINT) }
    return child.wait()
}

final class OnceFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var set = false
    /// True the first time only.
    func setFirstTime() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if set { return false }
        set = true
        return true
    }
}
