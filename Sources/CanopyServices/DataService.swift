import CanopyCore
import Foundation

/// The data store as users see it: their own tenant's namespace.
public struct DataService: Sendable {
    /// The store behind it.
    public let store: any DataStore

    /// Creates the service.
    public init(store: any DataStore) { self.store = store }

    /// A normalized path, or an invalid-argument error naming `field`.
    public static func path(_ raw: String, field: String = "path") throws -> String {
        guard let p = DataPath.normalize(raw) else {
            let shown = raw.utf8.count > 80 ? String(raw.prefix(60)) + "..." : raw
            throw CanopyError.invalid(field, "\"\(shown)\" is not a valid data path (\(DataPath.rule))")
        }
        return p
    }

    /// Lists a directory (or shows a file).
    public func list(_ path: String, as principal: Principal) throws -> [DataEntry] {
        try store.list(tenant: principal.tenant, path: try Self.path(path))
    }

    /// A stored file opened for streaming it out (read from the handle, never by path: a task may have left links
    /// in the store); not-found for missing files and paths through a link, a conflict for directories.
    public func file(_ path: String, as principal: Principal) throws -> (handle: FileHandle, entry: DataEntry) {
        let p = try Self.path(path)
        let missing = CanopyError(.notFound, "no such file: \(p)", field: "path")
        guard let entry = try store.entry(tenant: principal.tenant, path: p) else { throw missing }
        // The request is well formed; what is at the path is not a file: a conflict with the store's state.
        guard !entry.isDirectory else { throw CanopyError(.conflict, "\(p) is a directory; list it instead", field: "path") }
        guard let file = try store.openFile(tenant: principal.tenant, path: p) else { throw missing }
        return file
    }

    /// Writes a file: `fill` writes its bytes into the upload, which is then put in place whole, or dropped if
    /// anything failed (nothing partial is ever visible at `path`).
    public func write(_ path: String, as principal: Principal, _ fill: (any DataUpload) async throws -> Void) async throws -> DataEntry {
        let p = try Self.path(path)
        // The store adds its own prefix; a path the file system cannot open is the caller's to shorten, not a 500.
        guard store.localPath(tenant: principal.tenant, path: p).utf8.count < DataPath.maxPathBytes else {
            throw CanopyError.invalid("path", "path too long for the data store")
        }
        let upload = try store.upload(tenant: principal.tenant, path: p)
        do {
            try await fill(upload)
            try upload.commit()
        } catch {
            upload.abort()
            throw error
        }
        guard let entry = try store.entry(tenant: principal.tenant, path: p) else { throw CanopyError(.internal, "stored file vanished") }
        return entry
    }

    /// Deletes a file or directory.
    public func delete(_ path: String, as principal: Principal) throws {
        try store.delete(tenant: principal.tenant, path: try Self.path(path))
    }
}
