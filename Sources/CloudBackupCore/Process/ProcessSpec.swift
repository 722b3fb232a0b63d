import Foundation

/// What to run: a pure value, built by the argv builders and inspected by unit tests.
public struct ProcessSpec: Sendable, Equatable {
    /// A bare name (looked up on the spec's own PATH) or a path.
    public var executable: String
    public var arguments: [String]
    /// The child's complete environment. Nothing is inherited implicitly.
    public var environment: [String: String]
    public var standardInput: InputMode
    public var standardOutput: OutputMode
    public var standardError: OutputMode
    public var processGroup: ProcessGroupMode
    /// Descriptors of ours the child gets open under the same numbers (all others are closed on exec).
    /// Ours stay close-on-exec, so no other child inherits them. Use: the job's `flock` on a liveness
    /// file is shared with restic, so the lock stays held while restic runs even if we are SIGKILLed.
    public var inheritedDescriptors: [Int32]

    public init(
        executable: String,
        arguments: [String] = [],
        environment: [String: String],
        standardInput: InputMode = .null,
        standardOutput: OutputMode = .collect(limit: 1 << 20),
        standardError: OutputMode = .collect(limit: 1 << 20),
        processGroup: ProcessGroupMode = .new,
        inheritedDescriptors: [Int32] = []
    ) {
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.standardInput = standardInput
        self.standardOutput = standardOutput
        self.standardError = standardError
        self.processGroup = processGroup
        self.inheritedDescriptors = inheritedDescriptors
    }

    /// The command as a person would type it, for messages. Never contains secrets: secrets travel
    /// in the environment or in files, so the argv is safe to show.
    public var commandLine: String {
        ([executable] + arguments).map(shellQuoted).joined(separator: " ")
    }
}

public enum InputMode: Sendable, Equatable {
    /// The child reads our standard input (interactive passthrough).
    case inherit
    /// The child reads /dev/null: a job never waits for a keyboard.
    case null
}

public enum OutputMode: Sendable, Equatable {
    /// The child writes straight to our stream.
    case inherit
    case discard
    /// Keep the first `limit` bytes (short commands whose output we parse: `rclone lsjson`, `restic version`).
    case collect(limit: Int)
    /// Copy everything live to our own stream and keep only the last `tailLimit` bytes in memory
    /// (long jobs: restic output can be millions of lines).
    case stream(tailLimit: Int)
    /// Keep only the last `tailLimit` bytes, show nothing.
    case tail(limit: Int)
    /// Hand each complete line to an observer (which decides what to show and keep), instead of
    /// copying the bytes: restic's `--json` stream turned into readable progress.
    case observe(LineObserver)
}

/// Receives a child's output line by line, on the reader's thread. Compared by identity. The reader
/// thread can outlive the job (a grandchild holding the pipe), so the handler must not assume its
/// owner is still there: capture it weakly.
public final class LineObserver: Sendable, Equatable {
    let handle: @Sendable (Substring) -> Void
    /// Lines longer than this are cut (a stream without newlines must not grow memory).
    let maximumLineBytes: Int

    public init(maximumLineBytes: Int = 1 << 20, _ handle: @escaping @Sendable (Substring) -> Void) {
        self.handle = handle
        self.maximumLineBytes = maximumLineBytes
    }

    public static func == (left: LineObserver, right: LineObserver) -> Bool { left === right }
}

public enum ProcessGroupMode: Sendable, Equatable {
    /// Stay in our process group: the child gets terminal signals along with us.
    case inherit
    /// Its own process group: only the signals we forward reach it.
    case new
    /// Its own process group, made the terminal's foreground group while it runs (when stdin is a
    /// terminal), so an interactive child can read the terminal and gets Ctrl-C itself.
    case foreground
}

public enum TerminationStatus: Sendable, Equatable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)
    /// The wait failed, so how the child ended is not known: never a success. Happens when SIGCHLD is
    /// ignored (inherited from our parent) and the kernel reaped the child itself (ECHILD).
    case unknown(errno: Int32)

    /// The code a shell would report: the exit code, or 128 + the signal number; 70 (EX_SOFTWARE)
    /// when the status could not be read.
    public var shellExitCode: Int32 {
        switch self {
        case .exited(let code): return code
        case .signaled(let signal): return 128 + signal
        case .unknown: return ExitCode.software
        }
    }

    public var isSuccess: Bool { self == .exited(0) }

    public var description: String {
        switch self {
        case .exited(let code): return "exit code \(code)"
        case .signaled(let signal): return "killed by signal \(signal) (\(signalName(signal)))"
        case .unknown(let code): return "the exit status could not be read (waitpid: \(String(cString: strerror(code))))"
        }
    }
}

public struct ProcessResult: Sendable, Equatable {
    public var status: TerminationStatus
    /// What `.collect`, `.stream` or `.tail` kept of standard output (empty otherwise).
    public var standardOutput: String
    public var standardError: String

    public init(status: TerminationStatus, standardOutput: String = "", standardError: String = "") {
        self.status = status
        self.standardOutput = standardOutput
        self.standardError = standardError
    }

    /// Both streams as one text, stderr last (restic puts its errors there).
    public var combinedOutput: String {
        [standardOutput, standardError].filter { !$0.isEmpty }.joined(separator: "\n")
    }
}

func signalName(_ signal: Int32) -> String {
    switch signal {
    case SIGINT: return "SIGINT"
    case SIGTERM: return "SIGTERM"
    case SIGKILL: return "SIGKILL"
    case SIGHUP: return "SIGHUP"
    case SIGPIPE: return "SIGPIPE"
    case SIGQUIT: return "SIGQUIT"
    case SIGSEGV: return "SIGSEGV"
    case SIGABRT: return "SIGABRT"
    default: return "signal \(signal)"
    }
}

/// Quotes a word for a POSIX shell only when it needs it, so messages show copy-pasteable commands.
public func shellQuoted(_ word: String) -> String {
    let safe = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@%+,")
    if !word.isEmpty && word.allSatisfy({ safe.contains($0) }) { return word }
    return "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
}
