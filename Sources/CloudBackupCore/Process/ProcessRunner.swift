import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Starts and waits for child processes. The one interface jobs use, so unit tests can hand them a
/// fake; `SystemProcessRunner` is the real one.
public protocol ProcessRunning: Sendable {
    func launch(_ spec: ProcessSpec) throws -> any RunningProcess
}

extension ProcessRunning {
    /// Starts the process and waits for it.
    public func run(_ spec: ProcessSpec) throws -> ProcessResult {
        try launch(spec).wait()
    }

    /// Starts the process and waits at most `seconds`; then kills it (its whole group) and returns nil.
    public func run(_ spec: ProcessSpec, timeout seconds: Double) throws -> ProcessResult? {
        let child = try launch(spec)
        let end = Date().addingTimeInterval(seconds)
        while !child.hasExited {
            if Date() >= end {
                child.send(SIGKILL)
                _ = child.wait()
                return nil
            }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return child.wait()
    }
}

public protocol RunningProcess: AnyObject, Sendable {
    var pid: pid_t { get }
    /// Waits for the exit and for both output streams to end.
    func wait() -> ProcessResult
    /// Sends a signal to the process (and to its group when it has its own).
    func send(_ signal: Int32)
    /// True once `wait` would return at once.
    var hasExited: Bool { get }
}

/// The real runner: `posix_spawn` with every Linux pitfall handled once, here:
/// - the child's signal mask is emptied and every signal reset to its default (a mask inherited from a
///   Dispatch thread would make restic deaf to SIGINT; an ignored SIGPIPE would be inherited);
/// - one blocking reader thread per pipe, so neither stream can fill up and deadlock the child;
/// - the result is ready only when the process has exited *and* both streams reached end-of-file;
/// - exit code and signal are kept apart, and a status that could not be read is never a success;
/// - a signal never reaches a PID that may have been reaped and reused (see `SpawnedProcess.reap`).
public struct SystemProcessRunner: ProcessRunning {
    public init() {}

    public func launch(_ spec: ProcessSpec) throws -> any RunningProcess {
        guard let path = ExecutableLookup.resolve(spec.executable, environment: spec.environment) else {
            throw CloudBackupError.programNotFound(name: spec.executable, path: spec.environment["PATH"] ?? "")
        }
        return try SpawnedProcess(spec: spec, path: path)
    }
}

enum ExecutableLookup {
    /// Finds `name` on the PATH of the environment the child will get (not ours: tests put fixture
    /// programs first on a PATH of their own).
    static func resolve(_ name: String, environment: [String: String]) -> String? {
        if name.contains("/") {
            return access(name, X_OK) == 0 ? name : nil
        }
        let searchPath = environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in searchPath.split(separator: ":", omittingEmptySubsequences: true) {
            let candidate = "\(directory)/\(name)"
            var info = stat()
            if stat(candidate, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, access(candidate, X_OK) == 0 {
                return candidate
            }
        }
        return nil
    }
}

/// One spawned child. Shared by the job's thread, the reaper thread and signal handlers: its mutable
/// state sits behind one lock, which `send` also holds while it signals.
final class SpawnedProcess: RunningProcess, Sendable {
    let pid: pid_t
    private let ownsGroup: Bool
    /// The terminal descriptor whose foreground group the child was given (restored at its end).
    private let tookTerminal: Int32?
    private let readers: [OutputReader]
    private let stdoutReader: OutputReader?
    private let stderrReader: OutputReader?
    private let exited = DispatchSemaphore(value: 0)

    private struct State {
        /// The child has ended (a zombie not yet reaped, or already gone): its PID must not be signalled.
        var ended = false
        var status: TerminationStatus?
        var result: ProcessResult?
    }
    private let state = Locked(State())

    init(spec: ProcessSpec, path: String) throws {
        var fileActions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&fileActions)
        defer { posix_spawn_file_actions_destroy(&fileActions) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }

        // Clean signal state in the child, whatever thread we spawn from.
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        var defaults = sigset_t()
        sigfillset(&defaults)
        sigdelset(&defaults, SIGKILL)
        sigdelset(&defaults, SIGSTOP)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var flags = Int32(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)
        // The child gets the terminal when it shares one of our streams with it and we hold the
        // terminal's foreground: restic draws progress only when its process group is in the foreground.
        let wantsTerminal: Int32? = spec.processGroup == .foreground ? foregroundTerminal(of: spec) : nil
        if spec.processGroup != .inherit {
            flags |= Int32(POSIX_SPAWN_SETPGROUP)
            posix_spawnattr_setpgroup(&attributes, 0)
        }
        posix_spawnattr_setflags(&attributes, Int16(flags))

        if spec.standardInput == .null {
            posix_spawn_file_actions_addopen(&fileActions, STDIN_FILENO, "/dev/null", O_RDONLY, 0)
        }
        for descriptor in spec.inheritedDescriptors {
            // 0–2 are the streams wired here; a closed descriptor would make the spawn fail obscurely.
            guard descriptor > STDERR_FILENO, fcntl(descriptor, F_GETFD) != -1 else {
                throw CloudBackupError.system("handing descriptor \(descriptor) to \(spec.executable)", EBADF)
            }
            // dup2 onto itself: glibc (2.29+) then clears close-on-exec in the child only; ours keeps it.
            posix_spawn_file_actions_adddup2(&fileActions, descriptor, descriptor)
        }
        var parentEnds: [Int32] = []
        var childEnds: [Int32] = []
        func wire(_ mode: OutputMode, to target: Int32) throws -> Int32? {
            switch mode {
            case .inherit:
                return nil
            case .discard:
                posix_spawn_file_actions_addopen(&fileActions, target, "/dev/null", O_WRONLY, 0)
                return nil
            case .collect, .stream, .tail, .observe:
                var fds: [Int32] = [0, 0]
                guard systemPipe2(&fds, O_CLOEXEC) == 0 else { throw CloudBackupError.system("pipe", errno) }
                posix_spawn_file_actions_adddup2(&fileActions, fds[1], target)
                parentEnds.append(fds[0])
                childEnds.append(fds[1])
                return fds[0]
            }
        }
        let stdoutFD: Int32?
        let stderrFD: Int32?
        do {
            stdoutFD = try wire(spec.standardOutput, to: STDOUT_FILENO)
            stderrFD = try wire(spec.standardError, to: STDERR_FILENO)
        } catch {
            (parentEnds + childEnds).forEach { close($0) }
            throw error
        }

        let argv = [path] + spec.arguments
        let environment = spec.environment.map { "\($0.key)=\($0.value)" }
        var childPID: pid_t = 0
        let spawnError = withCStrings(argv) { argvPointer in
            withCStrings(environment) { environmentPointer in
                posix_spawn(&childPID, path, &fileActions, &attributes, argvPointer, environmentPointer)
            }
        }
        childEnds.forEach { close($0) }
        guard spawnError == 0 else {
            parentEnds.forEach { close($0) }
            throw CloudBackupError.system("starting \(path)", spawnError)
        }
        pid = childPID
        ownsGroup = spec.processGroup != .inherit
        if let terminal = wantsTerminal {
            // The child may already have tried to read and been stopped (SIGTTIN): hand it the
            // terminal, then let it continue.
            withBlockedTerminalSignals { _ = tcsetpgrp(terminal, childPID) }
            kill(-childPID, SIGCONT)
        }
        tookTerminal = wantsTerminal

        stdoutReader = stdoutFD.map { OutputReader(fd: $0, mode: spec.standardOutput, forwardTo: STDOUT_FILENO) }
        stderrReader = stderrFD.map { OutputReader(fd: $0, mode: spec.standardError, forwardTo: STDERR_FILENO) }
        readers = [stdoutReader, stderrReader].compactMap { $0 }
        readers.forEach { $0.start() }

        let thread = Thread { [self] in self.reap() }
        thread.name = "wait \(childPID)"
        thread.start()
    }

    /// Waits in two steps so that `send` can never hit a recycled PID: `waitid(WNOWAIT)` returns when
    /// the child has ended but leaves it a zombie (its PID and process group cannot be reused yet);
    /// the end is recorded under the lock `send` holds while signalling; only then `waitpid` reaps.
    /// A failed wait (ECHILD: our parent left SIGCHLD ignored and the kernel reaped the child) is
    /// `.unknown`, never "exit 0".
    private func reap() {
        var info = siginfo_t()
        var waited: Int32
        repeat {
            waited = waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT)
        } while waited == -1 && errno == EINTR
        let waitError = waited == -1 ? errno : 0
        state.withLock { $0.ended = true }

        var termination = TerminationStatus.unknown(errno: waitError)
        if waitError == 0 {
            var rawStatus: Int32 = 0
            var reaped: pid_t
            repeat {
                reaped = waitpid(pid, &rawStatus, 0)
            } while reaped == -1 && errno == EINTR
            termination = reaped == pid ? Self.decode(rawStatus) : .unknown(errno: errno)
        }
        if let terminal = tookTerminal {
            withBlockedTerminalSignals { _ = tcsetpgrp(terminal, getpgrp()) }
        }
        state.withLock { $0.status = termination }
        exited.signal()
    }

    /// A wait status word as exit code or signal (WIFEXITED / WTERMSIG are macros Swift does not import).
    static func decode(_ rawStatus: Int32) -> TerminationStatus {
        rawStatus & 0x7f == 0 ? .exited((rawStatus >> 8) & 0xff) : .signaled(rawStatus & 0x7f)
    }

    var hasExited: Bool {
        state.withLock { $0.status != nil }
    }

    func wait() -> ProcessResult {
        if let result = state.withLock({ $0.result }) { return result }
        exited.wait()
        exited.signal()  // later callers of wait() must not block
        // A grandchild that inherited a pipe (rclone started by restic, a daemonised agent) can hold it
        // open after the process is gone: give the streams a moment to end, then stop waiting for them.
        for reader in readers { reader.finish(waitingAtMost: 5) }
        let standardOutput = stdoutReader?.text ?? ""
        let standardError = stderrReader?.text ?? ""
        return state.withLock { state in
            if let result = state.result { return result }
            let finished = ProcessResult(status: state.status!, standardOutput: standardOutput, standardError: standardError)
            state.result = finished
            return finished
        }
    }

    func send(_ signal: Int32) {
        // Under the lock the reaper takes to record the end: while the child has not ended, its PID
        // (a zombie at worst) cannot belong to anyone else.
        state.withLock { state in
            guard !state.ended else { return }
            if ownsGroup {
                // The whole group: restic's own children (rclone for an `rclone:` repository) included.
                if kill(-pid, signal) == 0 { return }
            }
            kill(pid, signal)
        }
    }
}

/// Reads one pipe on its own thread until end-of-file, forwarding and/or keeping what the mode says.
/// The thread holds the reader strongly: it may outlive the process and its owner (a grandchild still
/// writing), and then only this object and the observer it was given are touched.
final class OutputReader: Sendable {
    private let fd: Int32
    private let mode: OutputMode
    private let forwardTo: Int32
    private let done = DispatchSemaphore(value: 0)
    private let kept: Locked<BoundedBuffer>

    init(fd: Int32, mode: OutputMode, forwardTo: Int32) {
        self.fd = fd
        self.mode = mode
        self.forwardTo = forwardTo
        switch mode {
        case .collect(let limit): kept = Locked(BoundedBuffer(limit: limit, keep: .head))
        case .stream(let limit), .tail(let limit): kept = Locked(BoundedBuffer(limit: limit, keep: .tail))
        case .inherit, .discard, .observe: kept = Locked(BoundedBuffer(limit: 0, keep: .head))
        }
    }

    func start() {
        let thread = Thread { [self] in self.pump() }
        thread.name = "read fd \(fd)"
        thread.start()
    }

    private func pump() {
        let chunkSize = 64 * 1024
        let chunk = UnsafeMutableRawPointer.allocate(byteCount: chunkSize, alignment: 8)
        defer {
            chunk.deallocate()
            close(fd)
            done.signal()
        }
        let forwards: Bool
        if case .stream = mode { forwards = true } else { forwards = false }
        var observer: LineObserver?
        if case .observe(let lineObserver) = mode { observer = lineObserver }
        var pending: [UInt8] = []
        defer {
            if let observer, !pending.isEmpty { observer.handle(Substring(String(decoding: pending, as: UTF8.self))) }
        }
        while true {
            let count = read(fd, chunk, chunkSize)
            if count == 0 { return }
            if count < 0 {
                if errno == EINTR { continue }
                return
            }
            if let observer {
                let bytes = UnsafeRawBufferPointer(start: chunk, count: count)
                var start = bytes.startIndex
                while let newline = bytes[start...].firstIndex(of: 10) {
                    pending.append(contentsOf: bytes[start..<newline])
                    observer.handle(Substring(String(decoding: pending, as: UTF8.self)))
                    pending.removeAll(keepingCapacity: true)
                    start = newline + 1
                }
                if pending.count < observer.maximumLineBytes {
                    pending.append(contentsOf: bytes[start...].prefix(observer.maximumLineBytes - pending.count))
                }
                continue
            }
            if forwards { writeFully(forwardTo, chunk, count) }
            let bytes = UnsafeRawBufferPointer(start: chunk, count: count)
            kept.withLock { $0.append(bytes) }
        }
    }

    /// Waits for end-of-file at most `seconds`; past that the reader thread is left to finish alone
    /// (a grandchild holds the pipe) and `text` is what it kept so far.
    func finish(waitingAtMost seconds: Double) {
        if done.wait(timeout: .now() + seconds) == .success {
            done.signal()  // a later finish() must not block
        }
    }

    var text: String {
        kept.withLock { $0.text }
    }
}


/// Writes all bytes, riding out short writes and EINTR. A closed reader (EPIPE) ends it quietly:
/// losing our own log stream must never stop a backup.
func writeFully(_ fd: Int32, _ pointer: UnsafeRawPointer, _ count: Int) {
    var offset = 0
    while offset < count {
        let written = write(fd, pointer + offset, count - offset)
        if written < 0 {
            if errno == EINTR { continue }
            return
        }
        offset += written
    }
}

/// The terminal (one of our standard streams the child inherits) whose foreground process group is
/// ours, so that we may hand it to the child; nil when there is none (logs, pipes, background jobs).
func foregroundTerminal(of spec: ProcessSpec) -> Int32? {
    let inherited: [(Int32, Bool)] = [(STDIN_FILENO, spec.standardInput == .inherit),
                                      (STDOUT_FILENO, spec.standardOutput == .inherit),
                                      (STDERR_FILENO, spec.standardError == .inherit)]
    return inherited.first { descriptor, inherits in
        inherits && isatty(descriptor) == 1 && tcgetpgrp(descriptor) == getpgrp()
    }?.0
}

func withBlockedTerminalSignals(_ body: () -> Void) {
    var block = sigset_t()
    var previous = sigset_t()
    sigemptyset(&block)
    sigaddset(&block, SIGTTOU)
    sigaddset(&block, SIGTTIN)
    pthread_sigmask(SIG_BLOCK, &block, &previous)
    body()
    pthread_sigmask(SIG_SETMASK, &previous, nil)
}

private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    pointers.append(nil)
    defer { pointers.forEach { free($0) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

/// glibc's pipe2, which Swift's Glibc module does not export: both ends close-on-exec from the start,
/// so a child spawned meanwhile by another thread cannot inherit them.
@_silgen_name("pipe2")
func systemPipe2(_ fds: UnsafeMutablePointer<Int32>, _ flags: Int32) -> Int32

/// Signals a process that is not our child (an orphaned rclone found through /proc), so its PID may be
/// recycled at any moment. A pidfd pins the process: once it is open, `stillMatches` can re-check who
/// it is (e.g. its /proc name) and the signal reaches that process or none, never a newcomer that got
/// the PID meanwhile. Without pidfd support (kernel before 5.3, or a seccomp filter that refuses it)
/// it falls back to `kill`, with the old small race. True when the signal was sent.
@discardableResult
public func signalProcess(_ pid: pid_t, _ signal: Int32, stillMatches: (pid_t) -> Bool = { _ in true }) -> Bool {
    // kill(0) and kill(-1) would reach our group or every process we may signal.
    guard pid > 0 else { return false }
    let pidfd = systemPidfdOpen(pid, 0)
    guard pidfd >= 0 else {
        // ESRCH: already gone. EPERM here can only come from a seccomp filter (pidfd_open checks no
        // permission), like ENOSYS: no pidfd on this system.
        guard errno == ENOSYS || errno == EPERM else { return false }
        return stillMatches(pid) && kill(pid, signal) == 0
    }
    defer { close(pidfd) }
    guard stillMatches(pid) else { return false }
    if systemPidfdSendSignal(pidfd, signal, nil, 0) == 0 { return true }
    if errno == ENOSYS { return kill(pid, signal) == 0 }
    return false
}

/// glibc's pidfd_open (2.36+): a descriptor (close-on-exec) that refers to one process, not a number.
@_silgen_name("pidfd_open")
func systemPidfdOpen(_ pid: pid_t, _ flags: UInt32) -> Int32

/// glibc's pidfd_send_signal (2.36+): kill(2) through a pidfd.
@_silgen_name("pidfd_send_signal")
func systemPidfdSendSignal(_ pidfd: Int32, _ signal: Int32, _ info: UnsafeMutableRawPointer?, _ flags: UInt32) -> Int32
