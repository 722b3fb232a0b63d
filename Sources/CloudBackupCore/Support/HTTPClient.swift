import CHTTPClient
import Foundation

/// HTTP through the system's libcurl, loaded on first use (see Sources/CHTTPClient).
public enum HTTPClient {
    public struct Answer: Sendable {
        public var status: Int
        public var pingBodyLimit: String
        public var body: String
    }

    /// A GET (`body` nil) or a POST; the answer's body is kept up to `answerLimit` bytes.
    public static func exchange(url: URL, body: Data?, contentType: String = "text/plain; charset=utf-8",
                                timeout: Double, answerLimit: Int = 0) throws -> Answer {
        var result = cb_http_result()
        var answer = [CChar](repeating: 0, count: max(1, answerLimit))
        var answerLength = 0
        let milliseconds = max(1, Int(timeout * 1000))
        let outcome: Int32 = url.absoluteString.withCString { address in
            answer.withUnsafeMutableBufferPointer { answerBuffer in
                guard let body else {
                    return cb_http_exchange(address, nil, 0, contentType, milliseconds, &result,
                                            answerBuffer.baseAddress, answerLimit, &answerLength)
                }
                var bytes = [CChar](repeating: 0, count: body.count + 1)
                bytes.withUnsafeMutableBytes { _ = body.copyBytes(to: $0) }
                return cb_http_exchange(address, bytes, body.count, contentType, milliseconds, &result,
                                        answerBuffer.baseAddress, answerLimit, &answerLength)
            }
        }
        guard outcome == 0 else {
            throw HTTPTransport.Failure(description: withUnsafeBytes(of: result.error) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) })
        }
        let limit = withUnsafeBytes(of: result.ping_body_limit) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let text = String(decoding: answer.prefix(answerLength).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return Answer(status: result.status, pingBodyLimit: limit, body: text)
    }
}
