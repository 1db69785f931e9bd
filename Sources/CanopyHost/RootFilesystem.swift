import CanopyCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// An image's root file system unpacked into a directory, for runtimes that run images without a container
/// engine on the node (the Slurm backend runs each task in one with bubblewrap).
///
/// The archive comes from an engine's export of an image, and an image is a stranger's: its files may be
/// set-user-id root, device nodes, or links that point anywhere. So it is unpacked by GNU tar as root into a
/// directory nobody else can reach, with every file owned by root (`--no-same-owner`; tar itself refuses members
/// named with `..` and delays links that leave the tree), then walked without following links: device nodes,
/// FIFOs and sockets are removed, set-user-id, set-group-id and group and world write bits cleared (a job's user outside the sandbox must not
/// change what every tenant's tasks run), and `etc/hosts`, `etc/resolv.conf` made
/// to exist (a task's sandbox binds the node's over them). Only then does the caller make it readable.
package enum RootFilesystem {
    /// How deep the walk descends; real images stay far below it.
    package static let maxDepth = 256

    /// Unpacks `archive` (a tar of a root file system) into `directory`, which must not exist; creates it 0700.
    package static func unpack(archive: String, into directory: String) throws {
        guard mkdir(directory, 0o700) == 0 else { throw CanopyError(.internal, "cannot create \(directory): \(String(cString: strerror(errno)))") }
        guard let tar = TaskUser.findProgram("tar", path: "/usr/bin:/bin") else {
            throw CanopyError(.internal, "GNU tar is needed to unpack images for the nodes, and is not in /usr/bin or /bin")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tar)
        p.arguments = [
            "--extract", "--file", archive, "--directory", directory, "--no-same-owner", "--same-permissions", "--delay-directory-restore",
            "--warning=no-unknown-keyword", "--warning=no-timestamp",
        ]
        p.environment = ["PATH": "/usr/bin:/bin", "LANG": "C"]
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let complaint = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw CanopyError(.internal, "tar could not unpack the image: \(complaint.split(separator: "\n").prefix(3).joined(separator: "; "))")
        }
        let root = try FileTree.openDirectory(directory)
        try sanitize(root, depth: 0)
        // The sandbox binds the node's name service files over these; a bind needs its target to exist.
        if let etc = try? FileTree.openDirectoryIfPresent(beneath: root, ["etc"], display: "etc") {
            for name in ["hosts", "resolv.conf"] where FileTree.lstatAt(etc, name) == nil {
                let f = openat(etc.fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
                if f >= 0 { close(f) }
            }
        }
    }

    /// Removes what is not a directory, regular file or link, and clears set-id bits, below `dir`.
    static func sanitize(_ dir: FileTree.Descriptor, depth: Int) throws {
        guard depth < maxDepth else { throw CanopyError(.invalidArgument, "the image's file system nests deeper than \(maxDepth) levels") }
        for name in FileTree.names(in: dir) {
            guard let st = FileTree.lstatAt(dir, name) else { continue }
            let kind = st.st_mode & S_IFMT
            switch kind {
            // Nothing may be writable by the jobs' users outside the sandbox either: one image serves every tenant.
            case S_IFDIR:
                if st.st_mode & (S_ISUID | S_ISGID | 0o022) != 0 { fchmodat(dir.fd, name, st.st_mode & 0o1755, 0) }
                let fd = openat(dir.fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard fd >= 0 else { throw CanopyError(.internal, "cannot open \(name) in the unpacked image") }
                try sanitize(FileTree.Descriptor(fd), depth: depth + 1)
            case S_IFREG:
                if st.st_mode & (S_ISUID | S_ISGID | 0o022) != 0 { fchmodat(dir.fd, name, st.st_mode & 0o755, 0) }
            case S_IFLNK:
                break
            default:
                // Devices, FIFOs, sockets: the sandbox has its own /dev.
                unlinkat(dir.fd, name, 0)
            }
        }
    }

    /// What `/` of a sandbox holds for this root file system: its top-level entries (directories and files are
    /// bound, links recreated), without the ones the sandbox provides itself (`proc`, `dev`, `tmp`).
    package static func topLevel(of directory: String) throws -> [ImageRootEntry] {
        let root = try FileTree.openDirectory(directory)
        var entries: [ImageRootEntry] = []
        for name in FileTree.names(in: root) where !["proc", "dev", "tmp", "sys"].contains(name) {
            guard let st = FileTree.lstatAt(root, name) else { continue }
            switch st.st_mode & S_IFMT {
            case S_IFDIR: entries.append(ImageRootEntry(name: name, kind: .directory))
            case S_IFREG: entries.append(ImageRootEntry(name: name, kind: .file))
            case S_IFLNK:
                var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let n = readlinkat(root.fd, name, &buffer, buffer.count - 1)
                guard n > 0 else { continue }
                buffer[n] = 0
                entries.append(ImageRootEntry(name: name, kind: .link(String(cString: buffer))))
            default: continue
            }
        }
        return entries
    }
}

extension RootFilesystem {
    /// Of `candidates` (paths relative to the root), the ones that are directories of the image, reached without
    /// a link: where a sandbox may put a fresh tmpfs over a read-only directory (`var/tmp`, `run`).
    package static func directories(_ candidates: [String], in directory: String) -> [String] {
        guard let root = try? FileTree.openDirectory(directory) else { return [] }
        return candidates.filter { path in
            (try? FileTree.openDirectoryIfPresent(beneath: root, path.split(separator: "/").map(String.init), display: path)) != nil
        }
    }
}

extension RootFilesystem {
    /// Of `candidates` (paths relative to the root), the ones that are regular files of the image, reached without
    /// a link: where a sandbox may bind one of the node's files over the image's (`etc/resolv.conf`).
    package static func files(_ candidates: [String], in directory: String) -> [String] {
        guard let root = try? FileTree.openDirectory(directory) else { return [] }
        return candidates.filter { path in
            var components = path.split(separator: "/").map(String.init)
            let name = components.removeLast()
            guard let parent = try? FileTree.openDirectoryIfPresent(beneath: root, components, display: path), let st = FileTree.lstatAt(parent, name)
            else { return false }
            return FileTree.isRegular(st)
        }
    }
}

/// A top-level entry of an unpacked image.
public struct ImageRootEntry: Sendable, Hashable {
    /// What it is.
    public enum Kind: Sendable, Hashable {
        case directory
        case file
        /// A symbolic link, with its target.
        case link(String)
    }

    /// Its name in `/`.
    public var name: String
    /// What it is.
    public var kind: Kind

    /// Creates one.
    public init(name: String, kind: Kind) {
        self.name = name
        self.kind = kind
    }
}
