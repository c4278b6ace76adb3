%% @doc The characters discovery accepts in names, in one place: the part
%% of a node name before '@' (also registry entries, SRV basenames, mDNS
%% realms), the host part, DNS labels made of a host, and ASCII
%% case-folding for DNS names. Pure functions, any process.
-module(macula_names).

-export([valid_name/1, valid_host/1, node_parts/1, label/1, lower/1]).

-define(MAX_NAME, 200).
-define(MAX_NODE, 255).

%% @doc True for 1-200 characters of A-Z a-z 0-9 _ - . not starting with
%% a dot (so it is also a safe file name).
-spec valid_name(term()) -> boolean().
valid_name([C | _] = Name) when C =/= $. ->
    length(Name) =< ?MAX_NAME andalso lists:all(fun name_char/1, Name);
valid_name(_) ->
    false.

%% @doc True for a host part: A-Z a-z 0-9 - . : (names, IPv4, IPv6).
-spec valid_host(term()) -> boolean().
valid_host([_ | _] = Host) ->
    lists:all(fun host_char/1, Host);
valid_host(_) ->
    false.

%% @doc {Name, Host} of "Name@Host" when both parts are valid, or error.
-spec node_parts(string() | binary()) -> {string(), string()} | error.
node_parts(Node) when is_binary(Node) ->
    node_parts(binary_to_list(Node));
node_parts(Node) when is_list(Node), length(Node) =< ?MAX_NODE ->
    case string:split(Node, "@") of
        [Name, Host] ->
            case valid_name(Name) andalso valid_host(Host) of
                true -> {Name, Host};
                false -> error
            end;
        _ -> error
    end;
node_parts(_) ->
    error.

%% @doc A DNS label made of Text: letters and digits kept, anything else
%% '-', at most 63 bytes.
-spec label(binary()) -> binary().
label(Text) ->
    Label = << <<(label_char(C))>> || <<C>> <= Text >>,
    binary:part(Label, 0, min(63, byte_size(Label))).

%% @doc ASCII lower case (DNS names compare so), of a binary or a string.
-spec lower(binary() | string()) -> binary() | string().
lower(Text) when is_binary(Text) ->
    << <<(lower_char(C))>> || <<C>> <= Text >>;
lower(Text) when is_list(Text) ->
    [lower_char(C) || C <- Text].

name_char(C) when is_integer(C) ->
    (C >= $a andalso C =< $z) orelse (C >= $A andalso C =< $Z) orelse
        (C >= $0 andalso C =< $9) orelse C =:= $_ orelse C =:= $- orelse C =:= $.;
name_char(_) ->
    false.

host_char(C) when is_integer(C) ->
    (C >= $a andalso C =< $z) orelse (C >= $A andalso C =< $Z) orelse
        (C >= $0 andalso C =< $9) orelse C =:= $- orelse C =:= $. orelse C =:= $:;
host_char(_) ->
    false.

label_char(C) when C >= $a, C =< $z; C >= $A, C =< $Z; C >= $0, C =< $9 -> C;
label_char(_) -> $-.

lower_char(C) when is_integer(C), C >= $A, C =< $Z -> C + 32;
lower_char(C) -> C.
