%% @doc The per-host name registry of macula_epmd: which `name@host'
%% node of this host (and network namespace) listens on which UDP port,
%% kept in files so that no daemon is needed.
%%
%% Layout: `Dir/net<I>/u<UID>/<Name>', where `I' identifies the network
%% namespace (nodes in another namespace are on another "host") and UID
%% the user whose nodes the directory holds. `Dir' and `Dir/net<I>' are
%% made world-writable when this code creates them, so that every user
%% can add a directory of their own; each `u<UID>' is its user's alone
%% (0755). An entry is one line, `macula 1 <port> <os pid>', at most
%% ?MAX_ENTRY bytes.
%%
%% Trust: a `u<UID>' directory is read only if it is a real directory
%% owned by UID that nobody else may write; an entry in it is believed
%% only if it is a regular file owned by UID, parses, its OS process still
%% runs under UID, and UID holds a UDP socket on the entry's port
%% (/proc/net/udp*). So a user can point a name only at a port of their
%% own, and a crashed node's entry is ignored (and replaced by the next
%% node of that name). A user who may write in `Dir/net<I>' can hide
%% another user's directory (rename it) unless `Dir' has the sticky bit
%% (chmod 1777, as /tmp), never forge its entries. Whom to trust on the
%% port is still decided by TLS and the cookie proof.
%%
%% Everything here uses prim_file: it runs at boot, before the file server.
-module(macula_registry).

-export([claim/3, release/2, lookup/2, names/1, valid_name/1]).

-include_lib("kernel/include/file.hrl").

-define(MAX_ENTRY, 128).
-define(MAX_ENTRIES, 1024).
-define(MAX_USERS, 256).
-define(MAX_PROC_NET, 4 bsl 20).
-define(MAX_NAME, 200).

%% @doc Registers Name on Port in the registry under Dir: ok, or a text
%% saying why not (a live node holds the name, or the directory is unsafe).
-spec claim(string(), string(), inet:port_number()) -> ok | {error, string()}.
claim(Dir, Name, Port) ->
    case valid_name(Name) of
        false -> {error, "a registry name is 1-200 characters of A-Z a-z 0-9 _ - ."};
        true ->
            case catch user_dir(Dir) of
                {ok, UserDir} -> claim_in(Dir, UserDir, Name, Port);
                {error, _} = Error -> Error
            end
    end.

claim_in(Dir, UserDir, Name, Port) ->
    case lookup(Dir, Name) of
        {ok, Held} ->
            {error, lists:flatten(io_lib:format("the name ~s is registered on port ~p by a "
                                                "running node", [Name, Held]))};
        error ->
            prune(UserDir),
            create(UserDir, filename:join(UserDir, Name), Port)
    end.

%% Entries of this user's nodes that are gone (killed, crashed) are
%% removed when a node registers, so they do not pile up.
prune(UserDir) ->
    Uid = my_uid(),
    Owners = udp_owners(),
    case prim_file:list_dir(UserDir) of
        {ok, Files} ->
            [prim_file:delete(F) || N <- lists:sublist(Files, ?MAX_ENTRIES), valid_name(N),
                                    F <- [filename:join(UserDir, N)],
                                    entry(F, Uid, Owners) =:= error],
            ok;
        {error, _} -> ok
    end.

%% Written aside, then linked into place: link fails if the name was
%% taken meanwhile, so two nodes never both believe they hold it.
create(UserDir, File, Port) ->
    Tmp = filename:join(UserDir, "." ++ filename:basename(File) ++ "." ++ os:getpid()),
    Line = io_lib:format("macula 1 ~p ~s~n", [Port, os:getpid()]),
    ok = prim_file:write_file(Tmp, iolist_to_binary(Line)),
    Result = prim_file:make_link(Tmp, File),
    _ = prim_file:delete(Tmp),
    case Result of
        ok -> ok;
        {error, Why} ->
            {error, lists:flatten(io_lib:format("cannot register ~s: ~s", [File,
                                                file:format_error(Why)]))}
    end.

%% @doc Removes Name's entry if it is still this OS process's.
-spec release(string(), string()) -> ok.
release(Dir, Name) ->
    File = filename:join([ns_path(Dir), user_dir_name(my_uid()), Name]),
    Mine = os:getpid(),
    case macula_setting:read_head(File, ?MAX_ENTRY) of
        {ok, Bin} ->
            case parse(Bin) of
                {ok, _Port, Mine} -> _ = prim_file:delete(File), ok;
                _ -> ok
            end;
        _ -> ok
    end.

%% @doc The port of a live node registered as Name (this user's first),
%% or error.
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
    case prim_file:list_dir(UserDir) of
        {ok, Files} ->
            Names = lists:sublist(lists:sort([F || F <- Files, valid_name(F)]), ?MAX_ENTRIES),
            [{N, P} || N <- Names, {ok, P} <- [entry(filename:join(UserDir, N), Uid, Owners)]];
        {error, _} ->
            []
    end.

%% @doc True for a name the registry can hold (a file name, no dot first).
-spec valid_name(term()) -> boolean().
valid_name([C | _] = Name) when C =/= $. ->
    length(Name) =< ?MAX_NAME andalso lists:all(fun name_char/1, Name);
valid_name(_) ->
    false.

name_char(C) when is_integer(C) ->
    (C >= $a andalso C =< $z) orelse (C >= $A andalso C =< $Z) orelse
        (C >= $0 andalso C =< $9) orelse C =:= $_ orelse C =:= $- orelse C =:= $.;
name_char(_) ->
    false.

%%% ------------------------------------------------------------------
%%% Entries

%% {ok, Port} for an entry of Uid that a live process of Uid holds.
entry(File, Uid, Owners) ->
    case prim_file:read_link_info(File) of
        {ok, #file_info{type = regular, size = Size, uid = Uid}} when Size =< ?MAX_ENTRY ->
            case macula_setting:read_head(File, ?MAX_ENTRY) of
                {ok, Bin} -> live(parse(Bin), Uid, Owners);
                _ -> error
            end;
        _ ->
            error
    end.

live({ok, Port, Pid}, Uid, Owners) ->
    case lists:member({Port, Uid}, Owners) andalso process_uid(Pid) =:= Uid of
        true -> {ok, Port};
        false -> error
    end;
live(error, _Uid, _Owners) ->
    error.

parse(Bin) ->
    case string:lexemes(binary_to_list(Bin), " \n") of
        ["macula", "1", P, Pid] ->
            try {list_to_integer(P), list_to_integer(Pid)} of
                {Port, N} when Port > 0, Port < 65536, N > 0 -> {ok, Port, Pid};
                _ -> error
            catch error:badarg -> error
            end;
        _ -> error
    end.

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
            Dirs = [{U, filename:join(NsDir, S)} || S <- lists:sublist(lists:sort(Subs), ?MAX_USERS),
                                                    U <- [uid_of(S)], is_integer(U),
                                                    safe_user_dir(filename:join(NsDir, S), U)],
            Rank = fun({U, _}) when U =:= Me -> 0; ({0, _}) -> 1; (_) -> 2 end,
            lists:sort(fun(A, B) -> Rank(A) =< Rank(B) end, Dirs);
        {error, _} ->
            []
    end.

uid_of("u" ++ Digits) ->
    try list_to_integer(Digits) catch error:badarg -> none end;
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

%% A directory this code creates is writable by every user (each adds a
%% directory of their own); one that exists keeps its mode.
shared_dir(Dir) ->
    case prim_file:make_dir(Dir) of
        ok -> _ = prim_file:write_file_info(Dir, #file_info{mode = 8#777});
        {error, _} -> ok
    end,
    case prim_file:read_file_info(Dir) of
        {ok, #file_info{type = directory}} -> ok;
        {ok, _} -> dir_error(Dir, "not a directory");
        {error, Why} -> dir_error(Dir, file:format_error(Why))
    end.

dir_error(Dir, Why) ->
    throw({error, "registry directory " ++ Dir ++ ": " ++ Why}).
