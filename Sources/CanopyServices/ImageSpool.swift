import CanopyCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// An uploaded image file on its way to the engine: written as it arrives to a private file (0600) in the server's
/// spool directory, never held whole in memory, refused once it passes its size limit, and removed when done.
public final class ImageSpool {
    /// The file's path.
    public let path: String
    /// The most bytes it takes.
    public let limit: Int64
    /// Bytes written so far.
    public private(set) var size: Int64 = 0
    private var fd: Int32

    init(directory: String, limit: Int64) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        path = directory + "/upload-" + IDGenerator.random()
        self.limit = limit
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CanopyError(.internal, "cannot create a spool file in \(directory): \(String(cString: strerror(errno)))") }
    }

    /// Appends bytes; a payload-too-large error once the file would pass its limit.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard fd >= 0 else { throw CanopyError(.internal, "spool file already closed") }
        let (total, overflow) = size.addingReportingOverflow(Int64(bytes.count))
        guard !overflow, total <= limit else {
            throw CanopyError(.payloadTooLarge, "the upload is larger than \(limit >> 30) GiB, the most an image file may be", field: "body")
        }
        var offset = 0
        while offset < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                let why = String(cString: strerror(errno))
                // A full disk is the server's state, not the caller's fault, and not a crash either.
                throw CanopyError(errno == ENOSPC ? .unavailable : .internal, "cannot spool the upload: \(why)")
            }
            offset += n
        }
        size = total
    }

    /// Closes the file (it stays, for the engine to read).
    public func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    /// Closes and removes the file.
    public func remove() {
        close()
        unlink(path)
    }

    deinit { remove() }
}
