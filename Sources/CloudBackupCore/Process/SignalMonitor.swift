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
/// Shared by the signal thread and the job threads: all its state sits behind one lock.
public final class SignalMonitor: Sendable {
    public static let shared = SignalMonitor()

    private struct State {
        var handlers: [Int: @Sendable (Int32) -> Void] = [:]
        var nextToken = 0
        var installed = false
        var received: Int32?
    }
    private let state = Locked(State())

    /// The first stop signal received (or simulated), if any.
    public var received: Int32? {
        state.withLock { $0.received }
    }

    /// Installs the handlers once; safe to call again.
    public func install(_ signals: [Int32] = [SIGINT, SIGTERM, SIGHUP]) {
        let readEnd: Int32? = state.withLock { state in
            guard !state.installed else { return nil }
            state.installed = true
            // Close-on-exec from the start: no child may hold our signal pipe.
            var fds: [Int32] = [0, 0]
            guard systemPipe2(&fds, O_CLOEXEC) == 0 else { return nil }
            signalPipeWriteEnd = fds[1]
            for signal in signals {
                var action = sigaction()
                action.__sigaction_handler.sa_handler = forwardSignalToPipe
                sigemptyset(&action.sa_mask)
                action.sa_flags = SA_RESTART
                sigaction(signal, &action, nil)
            }
            return fds[0]
        }
        guard let readEnd else { return }
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
        let current = state.withLock { state in
            if state.received == nil { state.received = signal }
            return state.handlers.sorted { $0.key < $1.key }.map(\.value)
        }
        current.forEach { $0(signal) }
    }

    /// Delivers a signal as if it had arrived (tests of what jobs do after a stop request).
    func simulateForTests(_ signal: Int32) {
        deliver(signal)
    }

    /// Calls `handler` for every signal until the returned token is passed to `remove`.
    @discardableResult
    public func add(_ handler: @escaping @Sendable (Int32) -> Void) -> Int {
        state.withLock { state in
            state.nextToken += 1
            state.handlers[state.nextToken] = handler
            return state.nextToken
        }
    }

    public func remove(_ token: Int) {
        _ = state.withLock { $0.handlers.removeValue(forKey: token) }
    }

    public var stopRequested: Bool {
        received != nil
    }
}

/// Runs a child so that a stop request reaches it the way restic needs: SIGINT first (restic then
/// removes its lock and exits 130), the remaining grace period, then SIGKILL. A request that came
/// before the child existed takes the same path as one that comes while it runs.
public func runInterruptibly(_ spec: ProcessSpec, runner: any ProcessRunning, signals: SignalMonitor,
                             graceSeconds: Int, log: Logger) throws -> ProcessResult {
    let child = try runner.launch(spec)
    let asked = OnceFlag()
    let stop: @Sendable (_ signal: Int32, _ noteRepeats: Bool) -> Void = { signal, noteRepeats in
        guard asked.setFirstTime() else {
            if noteRepeats { log.info("received \(signalName(signal)) again: already stopping") }
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
    let token = signals.add { stop($0, true) }
    defer { signals.remove(token) }
    // A signal that arrived before the child existed still counts: it was not handed to the handler,
    // which did not exist yet. (One arriving right now reaches both; the flag lets only one through.)
    if let signal = signals.received { stop(signal, false) }
    return child.wait()
}

/// True once, for whichever caller comes first.
final class OnceFlag: Sendable {
    private let set = Locked(false)
    /// True the first time only.
    func setFirstTime() -> Bool {
        set.withLock { set in
            defer { set = true }
            return !set
        }
    }
}
