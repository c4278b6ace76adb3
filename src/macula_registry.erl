%% @doc The per-host name registry of macula_epmd: which `name@host'
%% node of this host (and network namespace) listens on which UDP port,
%% kept in the file system so that no daemon is needed.
%%
%% Layout: `Dir/net<I>/u<UID>/<Name>', where `I' identifies the network
%% namespace (nodes in another namespace are on another "host") and UID
%% the user whose nodes the directory holds. `Dir' and `Dir/net<I>' are
%% shared like /tmp (mode 1777: anyone may add a directory, nobody may
%% remove or rename another's); this code creates them so, and refuses
%% to use them unless each is a real directory owned by root or this user
%% and sticky if others may write in it. Each `u<UID>' is its user's
%% alone (0755). An entry is a symbolic link whose target is the text
%% `macula:1:<port>:<os pid>': it is read with readlink, never opened, so
%% another user's entry cannot make a reader block or read a file.
%%
%% Trust: a `u<UID>' directory is read only if it is a real directory
%% owned by UID that nobody else may write; an entry in it is believed
%% only if it is a link owned by UID, its target parses, its OS process
%% still runs under UID, and UID holds a UDP socket on the entry's port
%% (/proc/net/udp*). So a user can point a name only at a port of their
%% own, a crashed node's entry is ignored (and removed by the next node
%% of that user that registers), and one user's names never stop
%% another's node from starting (lookups prefer this user's, then root's
%% entries). Whom to trust on the port is still decided by TLS and the
%% cookie proof.
%%
%% Everything here uses prim_file: it runs at boot, before the file server.
-module(macula_registry).

-export([claim/3, release/2, lookup/2, names/1]).

-import(macula_names, [valid_name/1]).

-include_lib("kernel/include/file.hrl").

-define(MAX_ENTRIES, 1024).
-define(MAX_USERS, 256).
-define(MAX_PROC_NET, 4 bsl 20).

%% @doc Registers Name on Port in the registry under Dir: ok, or a text
%% saying why not (a live node of this user holds the name, or a
%% directory is unsafe).
-spec claim(string(), string(), inet:port_number()) -> ok | {error, string()}.
claim(Dir, Name, Port) ->
    case valid_name(Name) of
        false -> {error, "a registry name is 1-200 characters of A-Z a-z 0-9 _ - ."};
        true ->
            try user_dir(Dir) of
                {ok, UserDir} -> prune(UserDir), create(UserDir, Name, Port, 2)
            catch
                throw:{error, _} = Error -> Error;
                Class:Why -> {error, lists:flatten(io_lib:format(
                                                     "macula_dist_registry_dir ~s: ~p:~p",
                                                     [Dir, Class, Why]))}
            end
    end.

%% The link is made in one step and fails if the name exists: two nodes
%% never both believe they hold it. A stale entry is removed and the
%% link tried once more.
create(UserDir, Name, Port, Tries) ->
    File = filename:join(UserDir, Name),
    Target = lists:flatten(io_lib:format("macula:1:~b:~s", [Port, os:getpid()])),
    case prim_file:make_symlink(Target, File) of
        ok -> ok;
        {error, eexist} when Tries > 1 ->
            case entry(File, my_uid(), udp_owners()) of
                {ok, Held} -> held(Name, Held);
                error -> _ = prim_file:delete(File), create(UserDir, Name, Port, Tries - 1)
            end;
        {error, Why} ->
            {error, lists:flatten(io_lib:format("cannot register ~s: ~s",
                                                [File, file:format_error(Why)]))}
    end.

held(Name, Port) ->
    {error, lists:flatten(io_lib:format("the name ~s is registered on port ~p by a "
                                        "running node", [Name, Port]))}.

%% Entries of this user's nodes that are gone (killed, crashed) are
%% removed when a node registers, so they do not pile up.
prune(UserDir) ->
    Uid = my_uid(),
    Owners = udp_owners(),
    [prim_file:delete(F) || N <- list(UserDir), F <- [filename:join(UserDir, N)],
                            entry(F, Uid, Owners) =:= error],
    ok.

%% @doc Removes Name's entry if it is still this OS process's.
-spec release(string(), string()) -> ok.
release(Dir, Name) ->
    File = filename:join([ns_path(Dir), user_dir_name(my_uid()), Name]),
    Mine = os:getpid(),
    case read_entry(File) of
        {ok, _Port, Mine} -> _ = prim_file:delete(File), ok;
        _ -> ok
    end.

%% @doc The port of a live node registered as Name (this user's first,
%% then root's, then other users'), or error.
-spec lookup(string(), string()) -> {ok, inet:port_number()} | error.
lookup(Dir, Name) ->
    case valid_name(Name) of
        true ->
            Owners = udp_owners(),
            Found = [P || {Uid, UserDir} <- user_dirs(Dir),
                          {ok, P} <- [entry(filename:join(UserDir, Name), Uid, Owners)]],
            case Found of
                [P | _] -> {ok, P};
                [] -> error
            end;
        false ->
            error
    end.

%% @doc Every live registered node: `[{Name, Port}]' (at most 1024 a user).
-spec names(string()) -> [{string(), inet:port_number()}].
names(Dir) ->
    Owners = udp_owners(),
    lists:ukeysort(1, lists:append([user_names(U, D, Owners) || {U, D} <- user_dirs(Dir)])).

user_names(Uid, UserDir, Owners) ->
    [{N, P} || N <- list(UserDir), {ok, P} <- [entry(filename:join(UserDir, N), Uid, Owners)]].

%% At most ?MAX_ENTRIES valid names of a directory.
list(UserDir) ->
    case prim_file:list_dir(UserDir) of
        {ok, Files} -> lists:sublist(lists:sort([F || F <- Files, valid_name(F)]), ?MAX_ENTRIES);
        {error, _} -> []
    end.

%%% ------------------------------------------------------------------
%%% Entries

%% {ok, Port} for an entry of Uid that a live process of Uid holds.
entry(File, Uid, Owners) ->
    case prim_file:read_link_info(File) of
        {ok, #file_info{type = symlink, uid = Uid}} -> live(read_entry(File), Uid, Owners);
        _ -> error
    end.

read_entry(File) ->
    case prim_file:read_link(File) of
        {ok, Target} -> parse(Target);
        {error, _} -> error
    end.

live({ok, Port, Pid}, Uid, Owners) ->
    case lists:member({Port, Uid}, Owners) andalso process_uid(Pid) =:= Uid of
        true -> {ok, Port};
        false -> error
    end;
live(error, _Uid, _Owners) ->
    error.

parse(Target) when length(Target) =< 64 ->
    case string:split(Target, ":", all) of
        ["macula", "1", P, Pid] ->
            try {list_to_integer(P), list_to_integer(Pid)} of
                {Port, N} when Port > 0, Port < 65536, N > 0 -> {ok, Port, Pid};
                _ -> error
            catch error:badarg -> error
            end;
        _ -> error
    end;
parse(_) ->
    error.

process_uid(Pid) ->
    case prim_file:read_file_info("/proc/" ++ Pid) of
        {ok, #file_info{uid = Uid}} -> Uid;
        _ -> none
    end.

my_uid() ->
    process_uid(os:getpid()).

%% {Port, Uid} of every UDP socket of this network namespace.
udp_owners() ->
    lists:append([sockets(F) || F <- ["/proc/net/udp", "/proc/net/udp6"]]).

sockets(File) ->
    case macula_setting:read_head(File, ?MAX_PROC_NET) of
        {ok, Bin} ->
            case string:lexemes(Bin, "\n") of
                [_Header | Lines] -> lists:filtermap(fun socket/1, Lines);
                [] -> []
            end;
        _ -> []
    end.

%% "sl local_address rem_address st tx:rx tr:when retr uid ...":
%% the local address ends in ":PORT" (hex).
socket(Line) ->
    case string:lexemes(Line, " ") of
        [_Sl, Local, _Rem, _St, _Q, _Tr, _Retr, Uid | _] ->
            case string:split(Local, ":", trailing) of
                [_, PortHex] ->
                    try {true, {binary_to_integer(PortHex, 16), binary_to_integer(Uid)}}
                    catch error:badarg -> false
                    end;
                _ -> false
            end;
        _ ->
            false
    end.

%%% ------------------------------------------------------------------
%%% Directories

%% Dir/net<inode of this network namespace>.
ns_path(Dir) ->
    Ns = case prim_file:read_link("/proc/self/ns/net") of
             {ok, Link} -> [C || C <- Link, C >= $0, C =< $9];
             _ -> "0"
         end,
    filename:join(Dir, "net" ++ Ns).

user_dir_name(Uid) ->
    "u" ++ integer_to_list(Uid).

%% [{Uid, Dir}] of the user directories that may be read, this user's
%% first, then root's, then the others.
user_dirs(Dir) ->
    NsDir = ns_path(Dir),
    case prim_file:list_dir(NsDir) of
        {ok, Subs} ->
            Me = my_uid(),
            Users = lists:sublist(lists:sort([{U, S} || S <- Subs, U <- [uid_of(S)],
                                                        is_integer(U)]), ?MAX_USERS),
            Dirs = [{U, D} || {U, S} <- Users, D <- [filename:join(NsDir, S)],
                              safe_user_dir(D, U)],
            Rank = fun({U, _}) when U =:= Me -> 0; ({0, _}) -> 1; (_) -> 2 end,
            lists:sort(fun(A, B) -> Rank(A) =< Rank(B) end, Dirs);
        {error, _} ->
            []
    end.

uid_of("u" ++ Digits) when Digits =/= "", length(Digits) =< 10 ->
    case lists:all(fun(C) -> C >= $0 andalso C =< $9 end, Digits) of
        true -> list_to_integer(Digits);
        false -> none
    end;
uid_of(_) ->
    none.

safe_user_dir(Path, Uid) ->
    case prim_file:read_link_info(Path) of
        {ok, #file_info{type = directory, uid = Uid, mode = Mode}} -> Mode band 8#022 =:= 0;
        _ -> false
    end.

%% This user's directory, created as needed.
user_dir(Dir) ->
    NsDir = ns_path(Dir),
    ok = shared_dir(Dir),
    ok = shared_dir(NsDir),
    Uid = my_uid(),
    UserDir = filename:join(NsDir, user_dir_name(Uid)),
    case prim_file:make_dir(UserDir) of
        ok -> _ = prim_file:write_file_info(UserDir, #file_info{mode = 8#755});
        {error, _} -> ok
    end,
    safe_user_dir(UserDir, Uid) orelse
        dir_error(UserDir, "not a directory of this user that only it may write"),
    {ok, UserDir}.

%% A directory this code creates is made like /tmp (1777; the file
%% module cannot set the sticky bit, chmod(1) can). One that exists is
%% used only if it is a real directory of root or this user, and sticky
%% if others may write in it.
shared_dir(Dir) ->
    case prim_file:make_dir(Dir) of
        ok -> sticky(Dir);
        {error, _} -> ok
    end,
    Me = my_uid(),
    case prim_file:read_link_info(Dir) of
        {ok, #file_info{type = directory, uid = Uid, mode = Mode}}
          when Uid =:= 0; Uid =:= Me ->
            Mode band 8#022 =:= 0 orelse Mode band 8#1000 =/= 0 orelse
                dir_error(Dir, "others may write in it and it is not sticky (chmod 1777)"),
            ok;
        {ok, #file_info{type = directory}} -> dir_error(Dir, "owned by another user");
        {ok, _} -> dir_error(Dir, "not a directory");
        {error, Why} -> dir_error(Dir, file:format_error(Why))
    end.

%% os:find_executable needs the file server, which is not up at boot.
sticky(Dir) ->
    case [C || C <- ["/usr/bin/chmod", "/bin/chmod"],
               element(1, prim_file:read_file_info(C)) =:= ok] of
        [] -> ok;
        [Chmod | _] ->
            Port = open_port({spawn_executable, Chmod},
                             [{args, ["1777", Dir]}, exit_status, stderr_to_stdout]),
            receive {Port, {exit_status, _}} -> ok
            after 5000 -> catch port_close(Port), ok
            end
    end.

dir_error(Dir, Why) ->
    throw({error, "macula_dist_registry_dir: " ++ Dir ++ ": " ++ Why}).
