%% The "socket" of a macula distribution connection, as dist_util sees it.
-record(macula_ctx, {
    conn   :: reference(),   % NIF connection resource
    id     :: non_neg_integer(),
    input  :: pid(),         % receives data frames, feeds the VM
    output :: pid(),         % the distribution controller, drains the VM
    %% Accepting side: the node name the peer's cookie proof is for; its
    %% name in the Erlang handshake must be this one.
    proven = undefined :: binary() | undefined
}).

%% Application close codes sent to the peer in CONNECTION_CLOSE.
-define(CLOSE_NORMAL, 0).
-define(CLOSE_BAD_COOKIE, 16#10).
-define(CLOSE_BAD_CERT_HOST, 16#11).
-define(CLOSE_PROTOCOL, 16#12).

%% The first frame of each side on the control stream, the proof of the
%% cookie, is made and parsed by the NIF (core/cookie_proof.h).
