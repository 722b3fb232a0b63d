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

    func testShellQuoting() {
        XCTAssertEqual(shellQuoted("plain-word_1.txt"), "plain-word_1.txt")
        XCTAssertEqual(shellQuoted("two words"), "'two words'")
        XCTAssertEqual(shellQuoted("it's"), "'it'\\''s'")
        XCTAssertEqual(shellQuoted(""), "''")
    }
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
