import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reads small files (Docker secrets, rclone.conf); injected so tests need no real files for unit cases.
public typealias FileReader = @Sendable (String) throws -> String

public let readFileFromDisk: FileReader = { path in
    try String(contentsOfFile: path, encoding: .utf8)
}

/// What a variable that names a file (`*_FILE`, `RCLONE_CONFIG`) found there.
enum ConfiguredFile: Equatable {
    case content(String)
    case missing
    /// The path names something that is not a regular file: "a directory", "a device", …
    case notAFile(String)
    case unreadable(reason: String)

    /// Secrets and rclone.conf are small: a bigger file is the wrong file.
    static let sizeLimit = 1 << 20

    /// Only regular files (or links to one) are read. A directory makes Foundation fail with
    /// "NSCocoaErrorDomain error 256"; a device (/dev/zero) or a pipe could be read without end, and a
    /// pipe read here is consumed before the tool it was meant for (restic reads RESTIC_PASSWORD_FILE
    /// itself) gets to read it.
    static func read(_ path: String, readFile: FileReader) -> ConfiguredFile {
        if let kind = nonRegularKind(path) { return .notAFile(kind) }
        do {
            return .content(try readFile(path))
        } catch where isNoSuchFile(error) {
            return .missing
        } catch {
            return .unreadable(reason: describe(error))
        }
    }

    /// nil for a regular file of a sensible size, and when the path cannot be examined (missing,
    /// forbidden): reading it then says why.
    static func nonRegularKind(_ path: String) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        switch info.st_mode & S_IFMT {
        case S_IFREG: return info.st_size > sizeLimit ? "a file of \(info.st_size) bytes (more than \(sizeLimit), far too big for this)" : nil
        case S_IFDIR: return "a directory"
        case S_IFCHR, S_IFBLK: return "a device"
        case S_IFIFO: return "a named pipe"
        case S_IFSOCK: return "a socket"
        default: return "something that is not a regular file"
        }
    }

    static func isNoSuchFile(_ error: Error) -> Bool {
        if let error = error as? CocoaError {
            if error.code == .fileReadNoSuchFile || error.code == .fileNoSuchFile { return true }
            if let underlying = error.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
                return underlying.code == Int(ENOENT)
            }
        }
        return false
    }
}

extension ConfigurationLoader {
    /// A secret held in a file, as the tools would use it, or the problem to report. `holds` completes
    /// "it should hold …". Trailing newlines are not part of a secret (editors and `echo` add one).
    static func secretFromFile(variable: String, path: String, holds: String, readFile: FileReader) -> Result<String, CloudBackupError> {
        switch ConfiguredFile.read(path, readFile: readFile) {
        case .notAFile(let kind):
            return .failure(.configuration(["\(variable) is set to \(kind) (\(path)): point it to the file that holds \(holds)."]))
        case .missing:
            return .failure(.configuration(["\(variable)=\(path): cannot read the file (no such file); it should hold \(holds)."]))
        case .unreadable(let reason):
            return .failure(.configuration(["\(variable)=\(path): cannot read the file (\(reason)); it should hold \(holds)."]))
        case .content(let text):
            let value = text.trimmingCharacters(in: .newlines)
            if value.isEmpty {
                return .failure(.configuration(["\(variable)=\(path): the file is empty; it should hold \(holds)."]))
            }
            if value.allSatisfy(\.isWhitespace) {
                return .failure(.configuration(["\(variable)=\(path): the file holds only whitespace; it should hold \(holds)."]))
            }
            return .success(value)
        }
    }
}

func describe(_ error: Error) -> String {
    if let error = error as? CocoaError, let underlying = error.userInfo[NSUnderlyingErrorKey] as? NSError,
       underlying.domain == NSPOSIXErrorDomain {
        return String(cString: strerror(Int32(underlying.code)))
    }
    if let error = error as? CocoaError {
        switch error.code {
        case .fileReadNoSuchFile, .fileNoSuchFile: return "no such file"
        case .fileReadNoPermission, .fileWriteNoPermission: return "permission denied"
        case .fileWriteVolumeReadOnly: return "read-only file system"
        case .fileWriteOutOfSpace: return "no space left on device"
        case .fileReadInapplicableStringEncoding: return "not UTF-8 text"
        case .fileReadUnknown: return "cannot be read"
        default: break
        }
    }
    return "\(error.localizedDescription)"
}
