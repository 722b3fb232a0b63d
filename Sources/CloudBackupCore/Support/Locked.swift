import Foundation

/// A value reachable only with its lock held, like the toolchain's `Synchronization.Mutex`, but on an
/// NSLock (a pthread mutex), which the thread sanitizer understands: on Linux it reports every Mutex
/// access as a race, which would drown real ones. The one `@unchecked Sendable` that classes sharing
/// state across threads build on, so the compiler checks that they keep no other mutable state.
final class Locked<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) {
        self.value = value
    }

    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
