from django.urls import path

from chat import views

app_name = "chat"
urlpatterns = [
    path("", views.chat_home, name="home"),
    path("ask", views.ask, name="ask"),
    path("conversations/", views.conversation_list, name="conversations"),
    path("c/<int:conversation_id>/", views.conversation_detail, name="conversation"),
    path("c/<int:conversation_id>/rename", views.conversation_rename, name="conversation-rename"),
    path("c/<int:conversation_id>/delete", views.conversation_delete, name="conversation-delete"),
    path("messages/<int:message_id>/", views.answer_detail, name="answer"),
    path("messages/<int:message_id>/stream", views.answer_stream, name="answer-stream"),
    path("messages/<int:message_id>/stop", views.answer_stop, name="answer-stop"),
    path("messages/<int:message_id>/regenerate", views.answer_regenerate, name="answer-regenerate"),
    path("messages/<int:message_id>/feedback", views.answer_feedback, name="answer-feedback"),
    path("assistants/", views.assistant_list, name="assistants"),
    path("assistants/new", views.assistant_create, name="assistant-create"),
    path("assistants/<int:assistant_id>/edit", views.assistant_edit, name="assistant-edit"),
    path("assistants/<int:assistant_id>/delete", views.assistant_delete, name="assistant-delete"),
]
