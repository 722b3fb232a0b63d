import XCTest
@testable import CloudBackupCore

/// The runner against real processes (/bin/sh), one Linux pitfall per test.
final class ProcessRunnerTests: XCTestCase {
    let runner = SystemProcessRunner()
    let environment = ["PATH": "/usr/bin:/bin"]

    func sh(_ script: String, stdout: OutputMode = .collect(limit: 1 << 20), stderr: OutputMode = .collect(limit: 1 << 20),
            group: ProcessGroupMode = .new) -> ProcessSpec {
        ProcessSpec(executable: "sh", arguments: ["-c", script], environment: environment,
                    standardOutput: stdout, standardError: stderr, processGroup: group)
    }

    func testExitCodesAndOutput() throws {
        let result = try runner.run(sh("echo out; echo err >&2; exit 3"))
        XCTAssertEqual(result.status, .exited(3))
        XCTAssertEqual(result.standardOutput, "out\n")
        XCTAssertEqual(result.standardError, "err\n")
    }

    func testSignalDeathIsNotAnExitCode() throws {
        let result = try runner.run(sh("kill -TERM $$"))
        XCTAssertEqual(result.status, .signaled(SIGTERM))
        XCTAssertEqual(result.status.shellExitCode, 143)
    }

    func testLargeOutputOnBothStreamsDoesNotDeadlock() throws {
        // 4 MB on each stream, far beyond a pipe's 64 KiB.
        let script = "head -c 4000000 /dev/zero | tr '\\0' a; head -c 4000000 /dev/zero | tr '\\0' b >&2"
        let result = try runner.run(sh(script, stdout: .tail(limit: 10), stderr: .collect(limit: 100)))
        XCTAssertEqual(result.status, .exited(0))
        XCTAssertEqual(result.standardOutput, String(repeating: "a", count: 10))
        XCTAssertEqual(result.standardError, String(repeating: "b", count: 100))
    }

    func testTheChildGetsOnlyTheEnvironmentItIsGiven() throws {
        let result = try runner.run(ProcessSpec(executable: "sh", arguments: ["-c", "echo \"[$ONLY][$HOME]\""],
                                                environment: ["PATH": "/usr/bin:/bin", "ONLY": "yes"]))
        XCTAssertEqual(result.standardOutput, "[yes][]\n")
    }

    func testAMissingProgramIsAClearError() {
        XCTAssertThrowsError(try runner.run(ProcessSpec(executable: "no-such-program-here", environment: environment))) { error in
            XCTAssertEqual(error as? CloudBackupError, .programNotFound(name: "no-such-program-here", path: "/usr/bin:/bin"))
            XCTAssertEqual((error as? CloudBackupError)?.exitCode, 69)
        }
    }

    func testSignalsReachTheChildEvenFromAThreadThatBlocksThem() throws {
        // Pitfall 1: a child inherits a blocked SIGINT from the spawning thread unless the mask is reset.
        let box = ResultBox()
        let runner = self.runner
        let spec = sh("trap 'exit 42' INT; echo ready; while :; do sleep 0.05; done", stdout: .collect(limit: 100))
        let thread = Thread {
            var blocked = sigset_t()
            sigemptyset(&blocked)
            sigaddset(&blocked, SIGINT)
            pthread_sigmask(SIG_BLOCK, &blocked, nil)
            do {
                let child = try runner.launch(spec)
                Thread.sleep(forTimeInterval: 0.5)
                child.send(SIGINT)
                box.set(child.wait())
            } catch {
                box.set(nil)
            }
        }
        thread.start()
        let result = box.wait(seconds: 10)
        XCTAssertEqual(result?.status, .exited(42))
    }

    func testTheChildHasDefaultSignalDispositions() throws {
        // Pitfall 3/4: we ignore SIGPIPE; the child must not inherit that.
        signal(SIGPIPE, SIG_IGN)
        let result = try runner.run(sh("grep -E '^(SigIgn|SigBlk)' /proc/self/status"))
        let lines = result.standardOutput.split(separator: "\n")
        XCTAssertEqual(lines.count, 2)
        for line in lines {
            // Standard signals 1–31 (bits 0–30). glibc keeps its own real-time signals out of reach.
            let mask = UInt64(line.split(separator: "\t").last ?? "", radix: 16) ?? .max
            XCTAssertEqual(mask & 0x7fff_ffff, 0, "\(line)")
        }
    }

    func testAGrandchildHoldingThePipeDoesNotHangTheWait() throws {
        let started = Date()
        let result = try runner.run(sh("(sleep 30 &) ; echo parent done"))
        XCTAssertEqual(result.status, .exited(0))
        XCTAssertTrue(result.standardOutput.hasPrefix("parent done"))
        XCTAssertLessThan(Date().timeIntervalSince(started), 15)
    }

    func testOwnProcessGroupGetsTheSignal() throws {
        let child = try runner.launch(sh("sleep 30 & wait", stdout: .discard, stderr: .discard))
        Thread.sleep(forTimeInterval: 0.2)
        XCTAssertEqual(getpgid(child.pid), child.pid)
        child.send(SIGKILL)
        XCTAssertEqual(child.wait().status, .signaled(SIGKILL))
    }

    func testAStatusThatCannotBeReadIsNeverASuccess() throws {
        // A parent that ignores SIGCHLD makes the kernel reap our children: waitpid then fails with
        // ECHILD, and a status word left at 0 would turn `exit 1` into a success.
        signal(SIGCHLD, SIG_IGN)
        defer { signal(SIGCHLD, SIG_DFL) }
        let result = try runner.run(sh("exit 1"))
        XCTAssertFalse(result.status.isSuccess, "\(result.status)")
        XCTAssertEqual(result.status, .unknown(errno: ECHILD))
        XCTAssertEqual(result.status.shellExitCode, 70)
        XCTAssertEqual(result.status.description, "the exit status could not be read (waitpid: No child processes)")
        XCTAssertEqual(ResticOutcome.classify(status: result.status, output: ""),
                       .failed(reason: "restic ended, but the exit status could not be read (waitpid: No child processes)"))
    }

    func testAHandedOverDescriptorKeepsTheLockWhileTheChildRuns() throws {
        // The job's liveness lock: held by restic too, so it outlives a SIGKILLed parent.
        let path = NSTemporaryDirectory() + "inherit-\(UUID().uuidString).lock"
        defer { unlink(path) }
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        XCTAssertGreaterThan(fd, 2)
        XCTAssertEqual(flock(fd, LOCK_EX), 0)
        let child = try runner.launch(ProcessSpec(executable: "sleep", arguments: ["3"], environment: environment,
                                                  standardOutput: .discard, standardError: .discard, inheritedDescriptors: [fd]))
        XCTAssertEqual(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC, "ours stays close-on-exec")
        close(fd)

        let other = open(path, O_RDWR | O_CLOEXEC)
        defer { close(other) }
        XCTAssertEqual(flock(other, LOCK_EX | LOCK_NB), -1, "the child holds the lock")
        XCTAssertEqual(errno, EWOULDBLOCK)
        XCTAssertEqual(child.wait().status, .exited(0))
        XCTAssertEqual(flock(other, LOCK_EX | LOCK_NB), 0, "released when the child ended")
    }

    func testOnlyTheListedDescriptorsReachTheChild() throws {
        let listed = open("/dev/null", O_RDONLY | O_CLOEXEC)
        let notListed = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer { close(listed); close(notListed) }
        SignalMonitor.shared.install()  // its pipe must not leak either
        // Descriptors our own parent left open (not close-on-exec) pass through: they are not ours to
        // close. Anything else the child sees must be listed, or the directory `ls` opens to list.
        let passedThrough = Set(try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").compactMap { Int32($0) }
            .filter { fcntl($0, F_GETFD) == 0 })
        let spec = ProcessSpec(executable: "ls", arguments: ["/proc/self/fd"], environment: environment, inheritedDescriptors: [listed])
        let numbers = try runner.run(spec).standardOutput.split(separator: "\n").compactMap { Int32($0) }
        XCTAssertTrue(numbers.contains(listed), "\(numbers)")
        XCTAssertFalse(numbers.contains(notListed), "\(numbers)")
        let unexpected = numbers.filter { $0 > 2 && $0 != listed && !passedThrough.contains($0) }
        XCTAssertEqual(unexpected.count, 1, "only ls's own directory: \(unexpected)")
    }

    func testAStandardOrClosedDescriptorCannotBeHandedOver() {
        let closed = open("/dev/null", O_RDONLY | O_CLOEXEC)
        close(closed)
        for descriptor in [STDOUT_FILENO, closed] {
            XCTAssertThrowsError(try runner.launch(ProcessSpec(executable: "true", environment: environment, inheritedDescriptors: [descriptor])))
        }
    }

    func testSignalProcessReachesTheProcessItPinned() throws {
        let child = try runner.launch(ProcessSpec(executable: "sleep", arguments: ["30"], environment: environment))
        var checked: [pid_t] = []
        XCTAssertTrue(signalProcess(child.pid, SIGTERM, stillMatches: { checked.append($0); return true }))
        XCTAssertEqual(checked, [child.pid])
        XCTAssertEqual(child.wait().status, .signaled(SIGTERM))
    }

    func testSignalProcessLeavesAProcessThatNoLongerMatchesAlone() throws {
        let child = try runner.launch(ProcessSpec(executable: "sleep", arguments: ["30"], environment: environment))
        defer { child.send(SIGKILL); _ = child.wait() }
        XCTAssertFalse(signalProcess(child.pid, SIGTERM, stillMatches: { _ in false }))
        Thread.sleep(forTimeInterval: 0.2)
        XCTAssertFalse(child.hasExited)
    }

    func testSignalProcessRefusesGroupsAndTheDead() throws {
        // 0 and -1 would mean our whole group or every process we may signal.
        XCTAssertFalse(signalProcess(0, 0))
        XCTAssertFalse(signalProcess(-1, 0))
        let child = try runner.launch(sh("exit 0"))
        let pid = child.pid
        _ = child.wait()
        XCTAssertFalse(signalProcess(pid, 0), "reaped: no such process")
    }

    func testShellQuoting() {
        XCTAssertEqual(shellQuoted("plain-word_1.txt"), "plain-word_1.txt")
        XCTAssertEqual(shellQuoted("two words"), "'two words'")
        XCTAssertEqual(shellQuoted("it's"), "'it'\\''s'")
        XCTAssertEqual(shellQuoted(""), "''")
    }

    /// Why the runner is posix_spawn with POSIX_SPAWN_SETSIGMASK (docs/design.md#process-runner): a
    /// Dispatch worker thread is reused by whatever runs on it next, and a child inherits the spawning
    /// thread's signal mask across exec. Here a worker blocks SIGINT (as a library may, for its own
    /// signal handling) and then starts children of programs that keep the mask they get (grep, sleep;
    /// a shell would clear it itself): a plain posix_spawn gives the child SIGINT blocked (the behaviour
    /// the runner depends on undoing: restic would never see the SIGINT that makes it remove its lock),
    /// the runner gives it an empty mask, and SIGINT stops it.
    func testAChildStartedFromADispatchWorkerThatBlocksSIGINTStillGetsSIGINT() throws {
        final class Outcome: @unchecked Sendable {
            var plainMask: UInt64?
            var runnerMask: UInt64?
            var runnerResult: ProcessResult?
            var problem: String?
        }
        @Sendable func mask(_ text: String) -> UInt64? {
            UInt64(text.split(separator: "\t").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "", radix: 16)
        }
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        let runner = self.runner
        let environment = self.environment
        let maskFile = NSTemporaryDirectory() + "sigmask-\(UUID().uuidString.prefix(8))"
        defer { unlink(maskFile) }
        DispatchQueue.global().async {
            defer { done.signal() }
            var blocked = sigset_t()
            sigemptyset(&blocked)
            sigaddset(&blocked, SIGINT)
            var previous = sigset_t()
            pthread_sigmask(SIG_BLOCK, &blocked, &previous)
            // The worker goes back to the pool as it came.
            defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }

            // A plain posix_spawn (no attributes), as a spawner that does not reset the mask.
            let arguments = ["grep", "^SigBlk", "/proc/self/status"]
            var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
            defer { argv.forEach { free($0) } }
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_addopen(&actions, 1, maskFile, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            var pid: pid_t = 0
            guard posix_spawnp(&pid, "grep", &actions, nil, &argv, environ) == 0 else {
                outcome.problem = "posix_spawn failed"
                return
            }
            var status: Int32 = 0
            _ = waitpid(pid, &status, 0)
            outcome.plainMask = mask((try? String(contentsOfFile: maskFile, encoding: .utf8)) ?? "")

            // The runner, from the same thread.
            do {
                let masks = try runner.run(ProcessSpec(executable: "grep", arguments: ["^SigBlk", "/proc/self/status"], environment: environment))
                outcome.runnerMask = mask(masks.standardOutput)
                let child = try runner.launch(ProcessSpec(executable: "sleep", arguments: ["30"], environment: environment,
                                                          standardOutput: .discard, standardError: .discard))
                Thread.sleep(forTimeInterval: 0.2)
                child.send(SIGINT)
                outcome.runnerResult = waitForExitWithin(child, seconds: 5)
            } catch {
                outcome.problem = "\(error)"
            }
        }
        XCTAssertEqual(done.wait(timeout: .now() + 20), .success)
        XCTAssertNil(outcome.problem)
        let sigint = UInt64(1) << (UInt64(SIGINT) - 1)
        XCTAssertEqual(outcome.plainMask.map { $0 & sigint }, sigint, "a plain posix_spawn hands the worker's blocked SIGINT to the child")
        XCTAssertEqual(outcome.runnerMask.map { $0 & 0x7fff_ffff }, 0, "the runner's child starts with no standard signal blocked")
        XCTAssertEqual(outcome.runnerResult?.status, .signaled(SIGINT), "SIGINT reached the runner's child")
    }
}

/// Waits for a child with a deadline, then kills it (so a child that ignores signals fails the test, not the suite).
func waitForExitWithin(_ process: any RunningProcess, seconds: Double) -> ProcessResult? {
    let end = Date().addingTimeInterval(seconds)
    while Date() < end {
        if process.hasExited { return process.wait() }
        Thread.sleep(forTimeInterval: 0.02)
    }
    process.send(SIGKILL)
    _ = process.wait()
    return nil
}

final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private let done = DispatchSemaphore(value: 0)
    private var value: ProcessResult?
    func set(_ result: ProcessResult?) { lock.lock(); value = result; lock.unlock(); done.signal() }
    func wait(seconds: Double) -> ProcessResult? {
        _ = done.wait(timeout: .now() + seconds)
        lock.lock(); defer { lock.unlock() }
        return value
    }
}
