import ArgumentParser
import AsyncHTTPClient
import CanopyCore
import CanopyHTTP
import Foundation
import NIOCore

struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Create, list and revoke access keys for the vendor dialects' signed (HMAC) APIs.",
        subcommands: [List.self, Create.self, Remove.self], defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List access keys (never their secrets).")
        @OptionGroup var format: OutputOption

        func run() async throws {
            try await client { c in
                let page = try await c.call(.GET, "/keys", as: Page<AccessKeyView>.self)
                if format.json { return printOut(try Format.json(page.items)) }
                printOut(
                    Format.table(
                        ["ID", "ACCESS KEY", "USER", "TENANT", "CREATED", "DESCRIPTION"],
                        page.items.map { [$0.id, $0.accessKey, $0.user, $0.tenant, Format.age($0.createdAt), $0.description] }))
            }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create", abstract: "Create an access key for yourself; the secret key is printed once and cannot be shown again.")
        @Option(help: "A description.") var description: String?
        @OptionGroup var format: OutputOption

        func run() async throws {
            try await client { c in
                let k = try await c.call(.POST, "/keys", body: CreateKeyRequest(description: description), as: AccessKeyView.self)
                if format.json { return printOut(try Format.json(k)) }
                printOut("id:         \(k.id)\naccessKey:  \(k.accessKey)\nsecretKey:  \(k.secretKey ?? "")")
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Revoke an access key: requests signed with it fail from now on.")
        @Argument(help: "Key id (see `canopy keys ls`).") var id: String

        func run() async throws {
            try await client { c in
                _ = try await c.raw(.DELETE, "/keys/\(id)")
                printOut(id)
            }
        }
    }
}

struct DataCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data", abstract: "Put, get, list and delete files in your data store (what workloads stage in and out).",
        subcommands: [Put.self, Get.self, List.self, Remove.self])

    static func encode(_ path: String) -> String {
        path.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "/-._~"))) ?? path
    }

    struct Put: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "put", abstract: "Upload a file, or a directory recursively, to REMOTE (e.g. /user/me/data_in).")
        @Argument(help: "Local file or directory.") var local: String
        @Argument(help: "Destination path in the data store.") var remote: String

        func run() async throws {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: local, isDirectory: &isDir) else { throw CLIError("\(local): no such file or directory") }
            var files: [(String, String)] = []
            if isDir.boolValue {
                let base = remote.hasSuffix("/") ? String(remote.dropLast()) : remote
                let e = FileManager.default.enumerator(atPath: local)
                while let rel = e?.nextObject() as? String {
                    var d: ObjCBool = false
                    if FileManager.default.fileExists(atPath: local + "/" + rel, isDirectory: &d), !d.boolValue { files.append((local + "/" + rel, base + "/" + rel)) }
                }
            } else {
                files.append((local, remote.hasSuffix("/") ? remote + (local as NSString).lastPathComponent : remote))
            }
            try await client { c in
                for (from, to) in files.sorted(by: { $0.1 < $1.1 }) {
                    try await c.upload(file: from, to: "/data/content?path=\(DataCommand.encode(to))")
                    printOut(to)
                }
            }
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "get",
            abstract: "Download a file (`-` writes it to standard output), or a directory recursively into LOCAL (created as needed).")
        @Argument(help: "Path in the data store.") var remote: String
        @Argument(help: "Local file or directory, or - for standard output.") var local: String

        func run() async throws {
            try await client { c in
                let entries = try await c.call(.GET, "/data?path=\(DataCommand.encode(remote))", as: Page<DataEntry>.self).items
                // A file lists as itself; a directory lists its children, whose paths are longer.
                guard let normalized = DataPath.normalize(remote) else { throw CLIError("\(remote) is not a valid data path (\(DataPath.rule))") }
                if entries.count == 1, !entries[0].isDirectory, entries[0].path == normalized {
                    // Into an existing local directory, as cp does, rather than in its place.
                    var isDir: ObjCBool = false
                    let into = local != "-" && FileManager.default.fileExists(atPath: local, isDirectory: &isDir) && isDir.boolValue
                    return try await download(c, remote, to: into ? local + "/" + (normalized as NSString).lastPathComponent : local)
                }
                guard local != "-" else { throw CLIError("\(remote) is a directory; give a local directory to copy it into") }
                try await downloadTree(c, normalized, entries, into: local)
            }
        }

        /// Copies a directory of the store, recursively, into `local`, printing each local file written.
        func downloadTree(_ c: CanopyClient, _ remote: String, _ entries: [DataEntry], into local: String) async throws {
            try FileManager.default.createDirectory(atPath: local, withIntermediateDirectories: true)
            for entry in entries {
                // Names come from the server: only a plain name below `remote` is written, never a path leading out.
                let name = String(entry.path.dropFirst(remote == "/" ? 1 : remote.count + 1))
                guard entry.path.hasPrefix(remote == "/" ? "/" : remote + "/"), !name.isEmpty, !name.contains("/"), name != ".", name != ".." else {
                    throw CLIError("unexpected entry \(entry.path) in \(remote)")
                }
                let target = local + "/" + name
                if entry.isDirectory {
                    let children = try await c.call(.GET, "/data?path=\(DataCommand.encode(entry.path))", as: Page<DataEntry>.self).items
                    try await downloadTree(c, entry.path, children, into: target)
                } else {
                    try await download(c, entry.path, to: target)
                    printOut(target)
                }
            }
        }

        /// Streams one file to `local` (through a partial file, renamed when complete) or to standard output.
        func download(_ c: CanopyClient, _ remote: String, to local: String) async throws {
            let toStdout = local == "-"
            let target = toStdout ? nil : local + ".canopy-partial"
            if let target { _ = FileManager.default.createFile(atPath: target, contents: nil) }
            guard let out = toStdout ? FileHandle.standardOutput : FileHandle(forWritingAtPath: target!) else { throw CLIError("cannot write \(local)") }
            do {
                try await c.stream("/data/content?path=\(DataCommand.encode(remote))") { chunk in out.write(Data(chunk.readableBytesView)) }
            } catch {
                if let target { try? FileManager.default.removeItem(atPath: target) }
                throw error
            }
            if let target {
                try out.close()
                _ = try? FileManager.default.removeItem(atPath: local)
                try FileManager.default.moveItem(atPath: target, toPath: local)
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List a directory of the data store.")
        @Argument(help: "Path in the data store.") var remote: String = "/"
        @OptionGroup var format: OutputOption

        func run() async throws {
            try await client { c in
                let page = try await c.call(.GET, "/data?path=\(DataCommand.encode(remote))", as: Page<DataEntry>.self)
                if format.json { return printOut(try Format.json(page.items)) }
                printOut(
                    Format.table(
                        ["PATH", "SIZE", "MODIFIED"], page.items.map { [$0.path + ($0.isDirectory ? "/" : ""), $0.isDirectory ? "-" : String($0.size), Format.age($0.modifiedAt)] }))
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Delete a file or a directory tree.")
        @Argument(help: "Path in the data store.") var remote: String

        func run() async throws {
            try await client { c in
                _ = try await c.raw(.DELETE, "/data?path=\(DataCommand.encode(remote))")
                printOut(remote)
            }
        }
    }
}

extension CanopyClient {
    /// Streams a local file as the body of a PUT.
    func upload(file: String, to path: String) async throws {
        // The same streamed upload as `canopy images import`: read as the network takes it, never whole.
        _ = try await upload(file: file, method: .PUT, to: path)
    }
}
