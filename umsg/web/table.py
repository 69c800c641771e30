"""The route table of the web app: every operation it serves, in one place.

`create_app` registers exactly these and `/api/v1/openapi.json` describes
exactly these; adding a route means adding a row here.
"""

from __future__ import annotations

from umsg.web import health, metrics, ws
from umsg.web.api import agents, contacts, conversations, media, messages, queue
from umsg.web.api import canned as api_canned
from umsg.web.api import inbox as api_inbox
from umsg.web.api import router as api_router
from umsg.web.api import routes as api_routes
from umsg.web.api import session as api_session
from umsg.web.api import typing_signal as api_typing
from umsg.web.api import wall as api_wall
from umsg.web.endpoints import ADMIN, API, STAFF, Endpoint
from umsg.web.openapi import openapi_json
from umsg.web.schemas import (
    AgentIn,
    AgentStateIn,
    ClaimIn,
    ContactQuery,
    ConversationPatch,
    ConversationQuery,
    EventsQuery,
    FailIn,
    MergeIn,
    MessageIn,
    Page,
    QueueQuery,
    ReplyIn,
)

NOT_FOUND = "no such object in the caller's projects"

ENDPOINTS: tuple[Endpoint, ...] = (
    # -- service -------------------------------------------------------------------------------
    Endpoint("GET", "/healthz", health.healthz, "Store and queue health", "service", auth=False,
             responses={200: "healthy", 503: "the store is unreachable"}),
    Endpoint("GET", "/metrics", metrics.metrics_text, "Prometheus metrics", "service", auth=False,
             media_type="text/plain; version=0.0.4",
             responses={200: "the metrics", 401: "needs 'Authorization: Bearer <accounts.metrics_token or an "
                        "admin token>' (unless accounts.metrics_public)"}),
    Endpoint("GET", f"{API}/openapi.json", openapi_json, "This OpenAPI document", "service", auth=False),
    Endpoint("GET", f"{API}/events", ws.events_feed, "Live event feed (websocket)", "events",
             query=EventsQuery, responses={101: "switching to the websocket", 426: "not a websocket request"},
             description="Sends every visible event after `after`, in id order, then live ones, as "
             "JSON {id, kind, project_id, payload, created_at}. Answers {\"type\": \"ping\"} with a pong. "
             "Browsers may pass the token as ?access_token= here (only here)."),
    # -- messages ------------------------------------------------------------------------------
    Endpoint("POST", f"{API}/messages", messages.post_message, "Submit an inbound message (api channel)",
             "messages", roles=STAFF, body=MessageIn,
             responses={201: "stored (after commit)", 200: "a duplicate of a stored message",
                        404: "unknown project", 503: "the store is unavailable; retry"}),
    Endpoint("GET", f"{API}/messages/{{id}}", messages.get_message, "A message with its parts", "messages",
             responses={200: "OK", 404: NOT_FOUND}),
    Endpoint("GET", f"{API}/parts/{{id}}/content", messages.get_part_content, "The bytes of a part",
             "messages", media_type="application/octet-stream",
             responses={200: "the content", 404: NOT_FOUND}),
    # -- conversations -------------------------------------------------------------------------
    Endpoint("GET", f"{API}/conversations", conversations.list_conversations, "List conversations",
             "conversations", query=ConversationQuery),
    Endpoint("GET", f"{API}/conversations/{{id}}", conversations.get_conversation, "One conversation",
             "conversations", responses={200: "OK", 404: NOT_FOUND}),
    Endpoint("PATCH", f"{API}/conversations/{{id}}", conversations.patch_conversation,
             "Change status, priority, assignee or snooze", "conversations", body=ConversationPatch,
             responses={200: "the updated conversation", 404: NOT_FOUND}),
    Endpoint("GET", f"{API}/conversations/{{id}}/messages", conversations.list_conversation_messages,
             "Messages of a conversation, with parts metadata", "conversations", query=Page,
             responses={200: "OK", 404: NOT_FOUND}),
    Endpoint("POST", f"{API}/conversations/{{id}}/reply", conversations.reply, "Queue a reply",
             "conversations",
             body=ReplyIn, responses={
                 202: "the queued outbound message", 404: NOT_FOUND,
                 403: "refused by the outbound authority: another project's channel, not the contact's address"}),
    # -- contacts ------------------------------------------------------------------------------
    Endpoint("GET", f"{API}/contacts", contacts.list_contacts, "List contacts", "contacts",
             query=ContactQuery),
    Endpoint("GET", f"{API}/contacts/{{id}}", contacts.get_contact, "A contact with identities", "contacts",
             responses={200: "OK", 404: NOT_FOUND}),
    Endpoint("POST", f"{API}/contacts/{{id}}/merge", contacts.merge_contact, "Merge a contact into another",
             "contacts", roles=STAFF, body=MergeIn,
             responses={200: "the merge record", 404: NOT_FOUND, 409: "cannot merge these contacts"}),
    Endpoint("POST", f"{API}/contact-merges/{{id}}/unmerge", contacts.unmerge_contact, "Undo a merge",
             "contacts", roles=STAFF,
             responses={200: "the merge record, undone", 404: NOT_FOUND, 409: "already undone"}),
    # -- queue ---------------------------------------------------------------------------------
    Endpoint("GET", f"{API}/queue", queue.list_queue, "List queue items", "queue", query=QueueQuery),
    Endpoint("GET", f"{API}/queue/stats", queue.queue_stats, "Queue counts by status", "queue"),
    Endpoint("POST", f"{API}/queue/claim", queue.claim, "Claim the best waiting item", "queue", body=ClaimIn,
             responses={200: "the claimed item", 204: "nothing is waiting"}),
    Endpoint("POST", f"{API}/queue/{{id}}/complete", queue.complete, "Complete a claimed item", "queue",
             responses={200: "the item", 404: NOT_FOUND, 409: "not leased by the caller"}),
    Endpoint("POST", f"{API}/queue/{{id}}/release", queue.release, "Give a claimed item back", "queue",
             responses={200: "the item", 404: NOT_FOUND, 409: "not leased by the caller"}),
    Endpoint("POST", f"{API}/queue/{{id}}/fail", queue.fail, "Record a failed attempt", "queue", body=FailIn,
             responses={200: "the item", 404: NOT_FOUND, 409: "not leased by the caller"}),
    # -- agents --------------------------------------------------------------------------------
    Endpoint("GET", f"{API}/agents", agents.list_agents, "List agents", "agents", query=Page),
    Endpoint("POST", f"{API}/agents", agents.create_agent, "Create an agent", "agents", roles=ADMIN,
             body=AgentIn, responses={201: "the agent", 409: "the login is taken"}),
    Endpoint("GET", f"{API}/agents/{{id}}", agents.get_agent, "One agent with projects and skills", "agents",
             responses={200: "OK", 404: NOT_FOUND}),
    Endpoint("PUT", f"{API}/agents/{{id}}/state", agents.put_agent_state, "Change an agent's presence state",
             "agents", body=AgentStateIn, responses={200: "the agent", 404: NOT_FOUND},
             description="An agent token may change only its own state."),
) + api_routes.ENDPOINTS + api_router.ENDPOINTS + (
    # -- the agents' inbox (issue 5) -----------------------------------------------------------
    Endpoint("POST", f"{API}/session", api_session.create_session, "Sign in with a login and password",
             "inbox", auth=False, body=api_session.SessionIn,
             responses={201: "an agent-bound token for the browser, with its expiry",
                        401: "the login or the password is wrong",
                        429: "too many failed sign-ins for this login or address; see Retry-After"}),
    Endpoint("GET", f"{API}/session", api_session.get_session, "Who the caller is and what the inbox offers",
             "inbox"),
    Endpoint("DELETE", f"{API}/session", api_session.delete_session, "Sign out (revoke this token)", "inbox",
             responses={204: "revoked"}),
    Endpoint("POST", f"{API}/session/refresh", api_session.refresh_session,
             "Rotate a browser session's token (the old one is revoked)", "inbox",
             responses={200: "a new token and its expiry", 401: "not a live browser session (sign in again)"}),
    Endpoint("PUT", f"{API}/agents/{{id}}/password", api_session.put_password, "Set an agent's password",
             "inbox", body=api_session.PasswordIn,
             responses={200: "set; the agent's other sessions are revoked",
                        403: "not the caller's own, or the current password is missing or wrong",
                        404: NOT_FOUND, 429: "too many wrong current passwords; see Retry-After"}),
    Endpoint("GET", f"{API}/inbox/work", api_inbox.my_work, "The conversations an agent holds", "inbox",
             query=api_inbox.WorkQuery),
    Endpoint("GET", f"{API}/contacts/{{id}}/timeline", api_inbox.contact_timeline,
             "Every message of every conversation of a contact, across channels", "inbox", query=Page,
             responses={200: "a page of messages in id order, with the contact", 404: NOT_FOUND}),
    Endpoint("POST", f"{API}/conversations/{{id}}/notes", api_inbox.add_note, "Add a private note",
             "inbox", body=api_inbox.NoteIn, responses={201: "the note", 404: NOT_FOUND}),
    Endpoint("POST", f"{API}/conversations/{{id}}/typing", api_typing.post_typing,
             "Tell the customer an agent is typing (or stopped)", "inbox", body=api_typing.TypingIn,
             responses={204: "the conversation.typing event is written", 404: NOT_FOUND}),
    Endpoint("POST", f"{API}/conversations/{{id}}/close", api_inbox.close_conversation,
             "Close with a wrap-up code (completes the held queue item)", "inbox", body=api_inbox.CloseIn,
             responses={200: "the closed conversation", 404: NOT_FOUND, 409: "another agent holds the item",
                        422: "unknown wrap-up code"}),
    Endpoint("GET", f"{API}/inbox/wall", api_wall.wall, "Supervisors' wall: queues and agents", "inbox",
             roles=STAFF),
    Endpoint("GET", f"{API}/canned-responses", api_canned.list_canned, "List canned responses", "inbox"),
    Endpoint("POST", f"{API}/canned-responses", api_canned.create_canned, "Create a canned response", "inbox",
             roles=STAFF, body=api_canned.CannedIn, responses={201: "created", 409: "the title is taken"}),
    Endpoint("PATCH", f"{API}/canned-responses/{{id}}", api_canned.patch_canned, "Edit a canned response",
             "inbox", roles=STAFF, body=api_canned.CannedPatch, responses={200: "OK", 404: NOT_FOUND}),
    Endpoint("DELETE", f"{API}/canned-responses/{{id}}", api_canned.delete_canned, "Delete a canned response",
             "inbox", roles=STAFF, responses={204: "deleted", 404: NOT_FOUND}),
    Endpoint("GET", f"{API}/wrapup-codes", api_canned.list_wrapups, "List wrap-up codes", "inbox"),
    Endpoint("POST", f"{API}/wrapup-codes", api_canned.create_wrapup, "Create a wrap-up code", "inbox",
             roles=STAFF, body=api_canned.WrapupIn, responses={201: "created", 409: "the code exists"}),
    Endpoint("DELETE", f"{API}/wrapup-codes/{{id}}", api_canned.delete_wrapup, "Delete a wrap-up code",
             "inbox", roles=STAFF, responses={204: "deleted", 404: NOT_FOUND}),
    Endpoint("GET", f"{API}/parts/{{id}}/pages", media.part_pages, "How many pages a TIFF/PDF part has",
             "messages", responses={200: "the page count", 404: NOT_FOUND, 415: "not a TIFF or PDF"}),
    Endpoint("GET", f"{API}/parts/{{id}}/pages/{{page}}", media.part_page_image, "One page as a PNG image",
             "messages", media_type="image/png",
             responses={200: "the page", 404: NOT_FOUND, 415: "not a TIFF or PDF"}),
)
