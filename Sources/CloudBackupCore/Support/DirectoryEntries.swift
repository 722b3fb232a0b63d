import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The names in the directory open as `descriptor` ("." and ".." left out), as NUL-terminated bytes
/// for the *at() calls: a file name need not be UTF-8. The descriptor stays open and where it was.
/// nil when it cannot be read as a directory.
func entryNames(ofDirectory descriptor: Int32) -> [[CChar]]? {
    let copy = dup(descriptor)
    guard copy >= 0 else { return nil }
    guard let directory = fdopendir(copy) else {
        close(copy)
        return nil
    }
    defer { closedir(directory) }
    var names: [[CChar]] = []
    while let entry = readdir(directory) {
        var name = withUnsafeBytes(of: entry.pointee.d_name) { raw in raw.prefix { $0 != 0 }.map { CChar(bitPattern: $0) } }
        if name == [46] || name == [46, 46] { continue }
        name.append(0)
        names.append(name)
    }
    return names
}
